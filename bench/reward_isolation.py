"""What killable reward processes cost per batch, against threads (a benchmark, not a test).

Scores GSM8K-shaped batches (chat completions of ~120 words, 200 completion ids each, the answer
column) with the default reward set (correctness, integer, strict_format, soft_format, xml_count)
through ``RewardScorer`` under each isolation, and prints the median seconds per batch and the ratio
to threads, for 64 and 512 completions:

  threads      isolation=thread: every function on a thread (how rewards ran before processes)
  auto         isolation=auto, the default: these built-ins are registered pure and fast, so threads
  processes    isolation=process: every function in its own reward process
  user/thread  the same five functions as user code (a file.py wrapping them) on threads
  user/auto    ... under the default, which puts user code in processes

Sides alternate within each round (and the order rotates between rounds), so a machine whose speed
drifts during the run slows every side alike; the scorers (and their processes) are built and warm
before the first timed batch.

    flock /tmp/grpo_heavy.lock .venv/bin/python bench/reward_isolation.py [--rounds 9] [--batches 10] [--sizes 64 512]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from grpo_ray.rewards.scorer import RewardScorer

DEFAULTS = ["correctness", "integer", "strict_format", "soft_format", "xml_count"]
USER_FILE = '''
from grpo_ray.rewards import (correctness_reward, integer_reward, soft_format_reward, strict_format_reward,
                              xml_count_reward)

def my_correctness(prompts, completions, **kw): return correctness_reward(prompts, completions, **kw)
def my_integer(prompts, completions, **kw): return integer_reward(prompts, completions, **kw)
def my_strict_format(prompts, completions, **kw): return strict_format_reward(prompts, completions, **kw)
def my_soft_format(prompts, completions, **kw): return soft_format_reward(prompts, completions, **kw)
def my_xml_count(prompts, completions, **kw): return xml_count_reward(prompts, completions, **kw)
'''


def make_batch(n: int, seed: int = 0) -> tuple[list, list, dict]:
    """n completions in groups of 8, as the driver passes them to the reward workers."""
    rng = random.Random(seed)
    prompts, completions, answers, ids = [], [], [], []
    words = "the total is so we add then subtract each of cookies apples more less".split()
    for i in range(n):
        gold = str(rng.randint(1, 999))
        question = [{"role": "system", "content": "Respond in the format <reasoning>...</reasoning><answer>...</answer>"},
                    {"role": "user", "content": f"Question {i // 8}: how many are left? " + " ".join(rng.choices(words, k=30))}]
        reasoning = " ".join(rng.choices(words, k=120))
        answer = gold if rng.random() < 0.5 else str(rng.randint(1, 999))
        text = f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n" + ("extra" if rng.random() < 0.3 else "")
        prompts.append(question)
        completions.append([{"role": "assistant", "content": text}])
        answers.append(gold)
        ids.append([rng.randrange(50000) for _ in range(200)])
    return prompts, completions, {"answer": answers, "completion_ids": ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per side per round")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        user = Path(tmp) / "my_rewards.py"
        user.write_text(USER_FILE)
        user_specs = [{"name": f"{user}:my_{n}"} for n in DEFAULTS]
        builtin_specs = [{"name": n} for n in DEFAULTS]
        sides = {
            "threads": (builtin_specs, "thread"),
            "auto": (builtin_specs, "auto"),
            "processes": (builtin_specs, "process"),
            "user/thread": (user_specs, "thread"),
            "user/auto": (user_specs, "auto"),
        }
        scorers = {name: RewardScorer(specs, "reasoning", 60.0, isolation=iso) for name, (specs, iso) in sides.items()}
        try:
            print(f"processes per side: { {name: len(s.processes) for name, s in scorers.items()} }")
            for n in args.sizes:
                batch = make_batch(n)
                expected = scorers["threads"].score(*batch).rewards
                for name, scorer in scorers.items():  # warm every side once; all must agree
                    assert str(scorer.score(*batch).rewards) == str(expected), f"{name} scored differently"
                times: dict[str, list[float]] = {name: [] for name in sides}
                order = list(sides)
                for r in range(args.rounds):
                    for name in order[r % len(order):] + order[: r % len(order)]:
                        for _ in range(args.batches):
                            start = time.perf_counter()
                            scorers[name].score(*batch)
                            times[name].append(time.perf_counter() - start)
                base = statistics.median(times["threads"])
                print(f"\n{n} completions, {args.rounds} rounds x {args.batches} batches per side (median per batch):")
                print(f"  {'side':<12} {'ms/batch':>9} {'p90 ms':>8} {'vs threads':>11}")
                for name, values in times.items():
                    med = statistics.median(values)
                    p90 = statistics.quantiles(values, n=10)[-1]
                    print(f"  {name:<12} {med * 1e3:9.2f} {p90 * 1e3:8.2f} {med / base:10.2f}x")
        finally:
            for scorer in scorers.values():
                scorer.close()


if __name__ == "__main__":
    main()
