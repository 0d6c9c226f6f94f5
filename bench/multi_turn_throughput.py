"""Multi-turn rollout throughput against single-turn generation of the same number of tokens, on one engine.

For a config with tools (``rollout.kind: multi_turn``), samples the same batch of training prompts two
ways on one vLLM engine (the rollout engine's settings, in this process), alternating them (ABAB...)
so that a machine whose speed drifts moves both alike (the order flips every round):

    multi-turn   the config's rollout kind: turns, tool calls and tool turns, episodes advancing
                 independently (tokens counted: those the model sampled)
    single-turn  one plain generation per episode (a request of its own, as each episode's first turn
                 is) of exactly as many tokens as the same episode of the latest multi-turn batch
                 sampled (min_tokens = max_tokens), same prompts, same G: the same tokens, lengths and
                 tail, without turns or tools

and prints tokens/s of each and their ratio (the goal is at least 0.8: the tool loop, the tools and
the re-prefill of each turn cost at most a fifth of plain generation).

    .venv/bin/python bench/multi_turn_throughput.py [--config examples/smollm2_arithmetic_tools_cpu.yaml] [--rounds 4]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "examples" / "smollm2_arithmetic_tools_cpu.yaml"))
    ap.add_argument("--rounds", type=int, default=4, help="batches of each kind, alternating")
    ap.add_argument("--set", action="append", default=[], help="key=value override")
    args = ap.parse_args()

    from grpo_ray.config import load_config
    from grpo_ray.data.from_config import load_split
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.engines import create_engine, engine_spec
    from grpo_ray.rollout.kinds import create_rollout_kind, kind_spec
    from grpo_ray.rollout.kinds.base import prompt_encoder
    from grpo_ray.rollout.prompting import per_prompt_seeds
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    cfg = load_config(args.config, args.set)
    if cfg.rollout.kind != "multi_turn":
        raise SystemExit(f"{args.config}: rollout.kind is {cfg.rollout.kind}; give a config with tools")
    engine = create_engine(replace(engine_spec(cfg, resolve_model_path(cfg.model.name_or_path)), lora=None))
    kind = create_rollout_kind(kind_spec(cfg))
    encode = prompt_encoder(kind_spec(cfg), engine.tokenizer)
    r, b = cfg.rollout, cfg.trainer.prompts_per_step
    rows = list(load_split(cfg.data, seed=cfg.trainer.seed, limit=b * (args.rounds + 1)))
    batches = [rows[i * b:(i + 1) * b] for i in range(args.rounds + 1)]

    def multi(batch, seed):
        sampling = SamplingConfig(n=r.group_size, temperature=r.temperature, max_tokens=r.max_completion_tokens, seed=seed)
        request = GenerationRequest([x["prompt"] for x in batch], sampling, per_prompt_seeds(seed, len(batch)), None,
                                    [{k: v for k, v in x.items() if k != "prompt"} for x in batch])
        start = time.perf_counter()
        out = kind.rollout(engine, request)
        seconds = time.perf_counter() - start
        tokens = sum(e["model_tokens"] for e in out.episode_stats)
        return tokens, seconds, out

    def single(batch, seed, lengths):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        g = r.group_size
        params = [SamplingParams(n=1, temperature=r.temperature, max_tokens=lengths[i * g + j],
                                 min_tokens=lengths[i * g + j], seed=s + j)
                  for i, s in enumerate(per_prompt_seeds(seed, len(batch))) for j in range(g)]
        prompts = [TokensPrompt(prompt_token_ids=encode(x["prompt"])) for x in batch for _ in range(g)]
        start = time.perf_counter()
        outs = engine.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(len(c.token_ids) for o in outs for c in o.outputs), seconds

    _, _, warm = multi(batches[0], 0)  # warm-up: the first batch pays for compiling and caching
    lengths = [max(1, e["model_tokens"]) for e in warm.episode_stats]
    totals = {"multi": [0, 0.0], "single": [0, 0.0]}
    stepping = 0.0  # seconds of the multi-turn rollouts spent in the engine's steps (the rest: tools, bookkeeping)
    turns, calls = [], []
    for i, batch in enumerate(batches[1:], start=1):
        # the order alternates; single-turn takes the lengths the latest multi-turn batch sampled
        if i % 2:
            single_tokens, single_seconds = single(batch, i, lengths)
        tokens, seconds, out = multi(batch, i)
        lengths = [max(1, e["model_tokens"]) for e in out.episode_stats]
        if not i % 2:
            single_tokens, single_seconds = single(batch, i, lengths)
        totals["multi"][0] += tokens
        totals["multi"][1] += seconds
        stepping += out.stats["generate_s"]
        totals["single"][0] += single_tokens
        totals["single"][1] += single_seconds
        turns += [e["turns"] for e in out.episode_stats]
        calls += [e["tool_calls"] for e in out.episode_stats]
        print(f"round {i}: multi-turn {tokens} tokens in {seconds:.1f} s, single-turn {single_tokens} in "
              f"{single_seconds:.1f} s", flush=True)
    kind.close()
    m, s = (totals[k][0] / totals[k][1] for k in ("multi", "single"))
    print(f"\n{cfg.model.name_or_path}, {args.rounds} rounds of B={b} x G={r.group_size}; "
          f"{sum(turns) / len(turns):.2f} turns and {sum(calls) / len(calls):.2f} tool calls per episode")
    print(f"multi-turn rollout   {m:.0f} tokens/s ({stepping / totals['multi'][1]:.0%} of its time in the engine's steps)")
    print(f"single-turn          {s:.0f} tokens/s")
    print(f"ratio                {m / s:.3f}   (goal >= 0.8)")


if __name__ == "__main__":
    main()
