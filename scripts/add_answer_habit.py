"""Give the built-in base model the habit GRPO is meant to break: answering without working.

    python scripts/build_builtin_model.py --seed 0 --steps 625      # phase 1: format + arithmetic
    python scripts/add_answer_habit.py                                # phase 2: this script, in place

Continues the supervised warm-up of ``scripts/build_builtin_model.py`` for a few steps on a mix
where most targets skip the working (``<reasoning>\\nI know this one.\\n</reasoning>`` then the answer)
and the rest show it as before. The result answers directly by default (greedy) and is usually
wrong that way, while sampling still shows the worked form often enough for GRPO to find that
writing the steps out earns the correctness reward. This is GRPO's premise in miniature: a
model that can reason but does not, taught to by reward alone. Measured numbers go to HABIT.json.

Measured (2 threads, seed 1, 120 steps of batch 64, lr 5e-4, 80% direct targets, ~2 min): greedy
held-out accuracy 3.5% with 95.5% of completions direct. Sampled with vLLM at T=0.7 (8 per held-out
problem): 21% worked, whose answers are right 15% of the time (one-step problems 24%), against 3.8%
for direct answers; at T=1.0, 40% worked, right 7.8% of the time against 3.4%.

Only ``model.safetensors`` is replaced (float16, as phase 1 writes it); config and tokenizer stay.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import build_builtin_model as bb  # noqa: E402

DIRECT = "I know this one."


def direct_share(texts: list[str]) -> float:
    return sum(DIRECT in t for t in texts) / max(1, len(texts))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=str(REPO / "grpo_ray/assets/models/arithmetic-base"))
    p.add_argument("--out", default=str(REPO / "grpo_ray/assets/models/arithmetic-base"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--direct-fraction", type=float, default=0.8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=40)
    args = p.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ray.data.arithmetic import heldout_problems

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    held = heldout_problems()
    exclude = frozenset(q["question"] for q in held)
    prefix = bb.common_prefix(bb.encode_prompts(tok, [bb.chat_messages(q["question"]) for q in held[:8]]))
    rng = random.Random(args.seed)
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        batch = bb.training_batch(10_000 + step, args.seed, 64, 0.125, exclude)
        batch = [dict(b, reasoning=DIRECT) if rng.random() < args.direct_fraction else b for b in batch]
        loss = bb.sft_loss(model, tok, batch, prefix)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            texts = bb.greedy_completions(model, tok, held)
            row = {"step": step, "loss": round(float(loss), 4), **bb.score(held, texts),
                   "direct_share_greedy": direct_share(texts), "s": round(time.time() - start, 1)}
            curve.append(row)
            print(json.dumps(row), flush=True)
    import shutil
    import tempfile

    out = Path(args.out)
    if out.resolve() != Path(args.base).resolve():
        shutil.copytree(args.base, out, dirs_exist_ok=True)  # config, tokenizer, BUILD.json
    with tempfile.TemporaryDirectory() as tmp:
        model.half().save_pretrained(tmp, safe_serialization=True)
        shutil.copy2(Path(tmp) / "model.safetensors", out / "model.safetensors")
    args_record = {k: (v if k not in ("base", "out") else Path(v).name) for k, v in vars(args).items()}
    (out / "HABIT.json").write_text(json.dumps({
        "command": "python scripts/add_answer_habit.py", "direct_text": DIRECT, "args": args_record,
        "curve": curve, "torch": torch.__version__,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
