"""Cold start: how often a model writes the answer format before any training, under each prompt recipe.

GRPO learns only from groups whose rewards differ. A model that never writes ``<answer>`` gives
every completion the same reward, so there is nothing to learn from. This script samples, for each
config given, ``--samples`` completions for each of ``--questions`` training questions with vLLM (the
rollout engine's CPU settings) and scores them with the config's reward functions, under four
variants of the config's prompt recipe:

    system        the system prompt alone
    prefix        + data.assistant_prefix (the reply starts prefilled, e.g. "<reasoning>\\n")
    demo          + data.demonstrations (worked examples as earlier chat turns)
    demo+prefix   both (the config's own recipe)

It prints one table row per (config, variant): the share of completions with an ``<answer>`` tag,
in soft format, in strict format, correct; the mean of each format reward; the share of groups
whose summed reward varies (what GRPO can learn from); mean length and the share cut at the token
limit; and for a config with tools (``rollout.kind: multi_turn``) the share of episodes that called a
tool and that got the gold answer back from one. The trajectories come from the rollout engine and
the config's rollout kind, as in training. Every trajectory goes to ``--out``/completions.jsonl.

Run (the model is converted on first use, about 25 s):

    flock /tmp/grpo_heavy.lock .venv/bin/python bench/cold_start.py \\
        --config examples/smollm2_gsm8k_cpu.yaml --config examples/smollm2_arithmetic_cpu.yaml \\
        --questions 8 --samples 8

``--variants`` picks a subset (comma-separated); ``--set key=value`` overrides every config
(e.g. ``--set rollout.temperature=0.7``); ``--greedy`` takes one greedy completion per question, as
the held-out evaluation does ("groups vary" is then meaningless).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = ("system", "prefix", "demo", "demo+prefix")


def variant_data(cfg, variant: str):
    """The config's data section with the recipe cut down to ``variant``."""
    d = cfg.data
    return d.model_copy(update={
        "demonstrations": d.demonstrations if "demo" in variant else [],
        "assistant_prefix": d.assistant_prefix if "prefix" in variant else "",
    })


def score_variant(cfg, rows, texts: list[str], finish: list[str], lengths: list[int], k: int) -> dict[str, float]:
    """Shares and means over ``len(rows) * k`` completions (``texts`` already include the prefix)."""
    import torch

    from grpo_ray.rewards import resolve_reward

    prompts = [r["prompt"] for r in rows for _ in range(k)]
    columns = {c: [r[c] for r in rows for _ in range(k)] for c in rows[0] if c != "prompt"}
    style = cfg.data.tag_style
    by_name = {}
    total = torch.zeros(len(texts))
    for f in cfg.reward.functions:
        values = resolve_reward(f.name)(prompts, texts, tag_style=style, **columns, **f.kwargs)
        values = torch.tensor([float("nan") if v is None else float(v) for v in values])
        by_name[f.name] = values
        total += f.weight * torch.nan_to_num(values)
    for extra in ("strict_format", "soft_format", "xml_count"):
        if extra not in by_name:
            by_name[extra] = torch.tensor(resolve_reward(extra)(prompts, texts, tag_style=style), dtype=torch.float32)
    correct_name = next((f.name for f in cfg.reward.functions if "correctness" in f.name), None)
    groups = total.view(-1, k)
    return {
        "answer_tag": sum("<answer>" in t for t in texts) / len(texts),
        "soft": float((by_name["soft_format"] > 0).float().mean()),
        "strict": float((by_name["strict_format"] > 0).float().mean()),
        "correct": float(torch.nan_to_num(by_name[correct_name]).mean()) if correct_name else float("nan"),
        "xml_count": float(by_name["xml_count"].mean()),
        "groups_vary": float((groups.max(dim=1).values > groups.min(dim=1).values).float().mean()),
        "reward": float(total.mean()),
        "length": sum(lengths) / len(lengths),
        "truncated": sum(f == "length" for f in finish) / len(finish),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", required=True, help="a train config (repeatable)")
    ap.add_argument("--questions", type=int, default=8, help="training questions per config")
    ap.add_argument("--samples", type=int, default=8, help="completions per question (a group)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    ap.add_argument("--set", action="append", default=[], help="key=value override applied to every config")
    ap.add_argument("--split", default=None, help="split to draw questions from (default: the config's data.split)")
    ap.add_argument("--greedy", action="store_true", help="one greedy completion per question (what eval sees)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/cold_start")
    args = ap.parse_args()
    if args.greedy:
        args.samples = 1

    from grpo_ray.config import load_config
    from grpo_ray.data.from_config import load_split
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.prompting import per_prompt_seeds

    configs = [load_config(path, args.set) for path in args.config]
    models = {c.model.name_or_path for c in configs}
    if len(models) != 1:
        raise SystemExit(f"all configs must name one model, got {sorted(models)}")
    from dataclasses import replace

    from grpo_ray.rollout.engines import create_engine, engine_spec
    from grpo_ray.rollout.kinds import create_rollout_kind, kind_spec
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    model_path = resolve_model_path(models.pop())
    # the rollout engine itself (on CPU: eager, whole prefills, a bounded KV cache, in-process), no adapter
    spec = replace(engine_spec(configs[0], model_path), max_model_len=2048, lora=None, seed=args.seed,
                   cpu_kvcache_gb=max(c.rollout.cpu_kvcache_gb for c in configs))
    start = time.perf_counter()
    engine = create_engine(spec)
    print(f"engine ready in {time.perf_counter() - start:.0f} s", flush=True)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = []
    with open(out_dir / "completions.jsonl", "w") as dump:
        for path, cfg in zip(args.config, configs):
            kind = create_rollout_kind(kind_spec(cfg))
            for variant in args.variants.split(","):
                data = variant_data(cfg, variant)
                rows = list(load_split(data, args.split, seed=args.seed, limit=args.questions))
                prompts = [r["prompt"] for r in rows]
                r = cfg.rollout
                sampling = SamplingConfig(n=args.samples, temperature=0.0 if args.greedy else r.temperature,
                                          top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_completion_tokens, seed=args.seed)
                request = GenerationRequest(prompts, sampling, per_prompt_seeds(args.seed, len(prompts)), None,
                                            [{k: v for k, v in row.items() if k != "prompt"} for row in rows])
                t0 = time.perf_counter()
                batch = kind.rollout(engine, request)
                seconds = time.perf_counter() - t0
                texts = batch.final_texts()  # the whole last reply, a prefix included, as training scores it
                lengths = [len(c) for c in batch.completion_ids]
                stats = score_variant(cfg, rows, texts, batch.finish_reasons, lengths, args.samples)
                if batch.episode_stats is not None:
                    stats.update(tool_stats(batch, rows, args.samples))
                stats.update(config=Path(path).name, variant=variant, n=len(texts), seconds=seconds,
                             prompt_tokens=sum(map(len, batch.prompt_ids)) / len(batch.prompt_ids),
                             tokens_per_s=sum(lengths) / seconds)
                table.append(stats)
                print(json.dumps(stats), flush=True)
                for i, messages in enumerate(batch.conversations()):
                    row = rows[i // args.samples]
                    dump.write(json.dumps({"config": stats["config"], "variant": variant, "answer": row["answer"],
                                           "question": row["question"][-300:], "completion": messages}) + "\n")
            kind.close()
    print_table(table, args)
    (out_dir / "table.json").write_text(json.dumps(table, indent=1))


def tool_stats(batch, rows, k: int) -> dict[str, float]:
    """Multi-turn rollouts: the share of episodes that called a tool, that got the gold answer back from
    one (the call itself was right), and the calls per episode."""
    from grpo_ray.rewards.parsing import normalize_gold

    episodes = batch.episode_stats
    right = 0
    for i, messages in enumerate(batch.conversations()):
        gold = normalize_gold(str(rows[i // k]["answer"]))
        right += any(m["role"] == "tool" and normalize_gold(str(m["content"])) == gold for m in messages)
    return {"tool_call_rate": sum(e["tool_calls"] > 0 for e in episodes) / len(episodes),
            "right_call": right / len(episodes),
            "calls": sum(e["tool_calls"] for e in episodes) / len(episodes),
            "malformed": sum(e["malformed_tool_calls"] for e in episodes) / len(episodes)}


def print_table(table: list[dict], args) -> None:
    how = "greedy" if args.greedy else f"{args.samples} samples at rollout.temperature"
    print(f"\n{args.questions} questions x {how} per row; overrides: {args.set or 'none'}")
    print("| config | variant | prompt tok | <answer> | soft | strict | correct | xml_count | groups vary | "
          "reward | length | truncated | tool call | right call | gen s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in table:
        tools = (f"{s['tool_call_rate']:.2f} | {s['right_call']:.2f}" if "tool_call_rate" in s else "- | -")
        print(f"| {s['config']} | {s['variant']} | {s['prompt_tokens']:.0f} | {s['answer_tag']:.2f} | "
              f"{s['soft']:.2f} | {s['strict']:.2f} | {s['correct']:.2f} | {s['xml_count']:.3f} | "
              f"{s['groups_vary']:.2f} | "
              f"{s['reward']:.3f} | {s['length']:.0f} | {s['truncated']:.2f} | {tools} | {s['seconds']:.0f} |")


if __name__ == "__main__":
    main()
