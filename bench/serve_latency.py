"""Latency and throughput of ``grpo-ray serve`` on this machine (a benchmark, not a test).

Starts the server on the built-in model with the shipped adapter (or uses --url), then measures,
for the base model and the adapter, over HTTP with the official openai client:
  - latency: 20 sequential greedy chat requests (p50 / p90 seconds, tokens per request),
  - time to first token when streaming (p50 over 10),
  - throughput: 32 concurrent sampled requests (completion tokens per second, wall time).

    .venv/bin/python bench/serve_latency.py [--url http://127.0.0.1:8000] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE, TUNED = "arithmetic-base", "arithmetic-tuned"


def start_server() -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")
    proc = subprocess.Popen([exe, "serve", "--model", f"builtin:{BASE}", "--adapter", f"builtin:{TUNED}", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    start = time.time()
    while not any("serving on" in x for x in lines):
        if proc.poll() is not None or time.time() - start > 300:
            raise SystemExit("the server did not start")
        time.sleep(0.5)
    print(f"server ready in {time.time() - start:.1f} s (Ray + Serve + vLLM start, from the command)")
    return f"http://127.0.0.1:{port}", proc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--max-tokens", type=int, default=48)
    args = p.parse_args()

    from openai import OpenAI

    from grpo_ray.config import DataConfig
    from grpo_ray.data.from_config import load_split

    url, proc = (args.url, None) if args.url else start_server()
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    prompts = [r["prompt"] for r in load_split(DataConfig(source="arithmetic"), "test", limit=64)]
    try:
        for model in (BASE, TUNED):
            client.chat.completions.create(model=model, messages=prompts[0], max_tokens=8)  # warm-up
            lat, toks = [], []
            for q in prompts[:20]:
                t = time.perf_counter()
                r = client.chat.completions.create(model=model, messages=q, max_tokens=args.max_tokens, temperature=0)
                lat.append(time.perf_counter() - t)
                toks.append(r.usage.completion_tokens)
            ttft = []
            for q in prompts[20:30]:
                t = time.perf_counter()
                for chunk in client.chat.completions.create(model=model, messages=q, max_tokens=args.max_tokens,
                                                            temperature=0, stream=True):
                    if chunk.choices and chunk.choices[0].delta.content:
                        ttft.append(time.perf_counter() - t)
                        break
            t = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                replies = list(pool.map(lambda q: client.chat.completions.create(
                    model=model, messages=q, max_tokens=args.max_tokens, temperature=0.7), prompts[32:64]))
            wall = time.perf_counter() - t
            total = sum(r.usage.completion_tokens for r in replies)
            q = statistics.quantiles(lat, n=10)
            print(f"{model:>18}: latency p50 {statistics.median(lat):.3f} s, p90 {q[-1]:.3f} s "
                  f"({statistics.mean(toks):.1f} tokens/request, {sum(toks) / sum(lat):.0f} tokens/s single); "
                  f"TTFT p50 {statistics.median(ttft) * 1000:.0f} ms; 32 concurrent: {wall:.2f} s, "
                  f"{total / wall:.0f} tokens/s, {32 / wall:.1f} requests/s")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=120)


if __name__ == "__main__":
    main()
