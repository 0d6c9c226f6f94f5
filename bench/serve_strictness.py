"""How many malformed requests slip past each layer of ``grpo-ray serve`` (a measurement, not a test).

Starts one vLLM engine in this process (the built-in model and the shipped adapter, the server's
own settings: ``grpo_ray.serve.app.start_vllm_app``) and puts three apps on three local ports:

    vllm          vLLM's own OpenAI app, no grpo_ray layer (what ``vllm serve`` answers)
    no-check      grpo-ray serve's layers without the request check (errors, reasoning fields)
    grpo-ray      all of grpo-ray serve's layers (what the integration test drives through Ray Serve)

Each gets the battery of tests/integration/serve_battery.py (the same seed as the test) over real
HTTP, and the script prints, per app, how many requests fell short of OpenAI's contract and how
(answered 2xx, 5xx, a 4xx without OpenAI's error body, naming the wrong parameter), with the first
few of each kind.

    flock /tmp/grpo_heavy.lock .venv/bin/python bench/serve_strictness.py [--random 200] [--show 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.integration

BASE, TUNED = "arithmetic-base", "arithmetic-tuned"
for _key, _value in {"VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}.items():  # as a replica has
    os.environ.setdefault(_key, _value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_battery(url: str, mutations) -> list[tuple[int, str]]:
    import httpx

    def answer(m):
        r = http.request(m.method, url + m.route, content=m.body, headers=m.headers)
        return r.status_code, r.text

    with httpx.Client(timeout=300) as http, ThreadPoolExecutor(8) as pool:
        return list(pool.map(answer, mutations))


def report(label: str, mutations, answers, show: int) -> None:
    from tests.integration.serve_battery import SHORTFALLS, problem

    short = [(m.name, *why) for m, (status, text) in zip(mutations, answers) if (why := problem(m, status, text))]
    kinds = Counter(kind for _, kind, _ in short)
    statuses = Counter(status for status, _ in answers)
    how = ", ".join(f"{kinds[k]} {k}" for k in SHORTFALLS if kinds[k]) or "none"
    print(f"\n{label}: {len(short)} of {len(mutations)} fell short ({how}); statuses {dict(sorted(statuses.items()))}")
    for kind in SHORTFALLS:
        for name, _, why in [s for s in short if s[1] == kind][:show]:
            print(f"    {kind}: {name}: {why}")


async def main(args) -> None:
    import uvicorn

    from grpo_ray.serve.app import start_vllm_app, wrap_vllm_app
    from grpo_ray.serve.options import ServeOptions
    from grpo_ray.serve.validation import MAX_BODY_BYTES
    from tests.integration.serve_battery import battery

    options = ServeOptions.from_dict({"model": f"builtin:{BASE}", "adapters": [f"builtin:{TUNED}"]})
    mutations = battery(TUNED, random_count=args.random, seed=args.seed, max_body_bytes=MAX_BODY_BYTES)
    async with AsyncExitStack() as stack:
        _, app = await start_vllm_app(options, stack)
        apps = {"vllm": app, "no-check": wrap_vllm_app(app, options, validate=False),
                "grpo-ray": wrap_vllm_app(app, options)}
        for label, asgi in apps.items():
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="error",
                                                   access_log=False, lifespan="off"))
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.1)
            answers = await asyncio.to_thread(run_battery, f"http://127.0.0.1:{port}", mutations)
            report(label, mutations, answers, args.show)
            server.should_exit = True
            await task


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--random", type=int, default=200, help="random mutations (the integration test uses 200)")
    p.add_argument("--seed", type=int, default=20261201, help="their seed (the integration test's)")
    p.add_argument("--show", type=int, default=8, help="examples printed per kind of shortfall")
    asyncio.run(main(p.parse_args()))
