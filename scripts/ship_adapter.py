"""Copy the adapter of a finished run into the package as a built-in adapter, with its provenance.

    python scripts/ship_adapter.py outputs/tiny_cpu [--name arithmetic-tuned]

Copies the latest complete checkpoint's PEFT adapter (weights + adapter_config.json) to
``grpo_ray/assets/adapters/NAME`` and writes PROVENANCE.json there: the run's resolved config, the
command that reproduces it, and its held-out evaluation before and after training. The shipped
``builtin:arithmetic-tuned`` is the adapter that the README's first command produces
(``grpo-ray train --config examples/tiny_cpu.yaml``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training output dir")
    parser.add_argument("--name", default="arithmetic-tuned")
    parser.add_argument("--command", default="grpo-ray train --config examples/tiny_cpu.yaml",
                        help="the command that produced the run (recorded)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from grpo_ray.run.checkpoints import find_latest_checkpoint
    from grpo_ray.models.adapter_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    run = Path(args.run)
    ckpt = find_latest_checkpoint(run)
    if ckpt is None:
        raise SystemExit(f"{run}: no complete checkpoint")
    state = json.loads((ckpt / "driver_state.json").read_text())
    target = REPO / "grpo_ray" / "assets" / "adapters" / args.name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        shutil.copy2(ckpt / "adapter" / name, target / name)
    config = json.loads((target / ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = "builtin:arithmetic-base"
    (target / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    evals = {}
    for step in (0, state["step"]):
        path = run / "eval" / f"step-{step}.json"
        if path.is_file():
            evals[f"step_{step}"] = json.loads(path.read_text())["means"]
    provenance = {
        "command": args.command,
        "step": state["step"],
        "heldout_eval_greedy": evals,
        "config": (ckpt / "config.yaml").read_text(),
        "bytes": {p.name: p.stat().st_size for p in sorted(target.iterdir())},
    }
    (target / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2))
    print(f"shipped {ckpt / 'adapter'} -> {target} ({sum(provenance['bytes'].values()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
