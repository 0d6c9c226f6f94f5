"""Atomic checkpoints: written under a temporary name, marked complete, then renamed.

Layout under ``output_dir/checkpoints``::

    step-000010/            a complete checkpoint
        adapter/            PEFT folder (adapter_config.json + adapter_model.safetensors) + tokenizer
                            (full fine-tuning: model/, the whole model as a transformers folder)
        learner/            DeepSpeed's checkpoint of every rank: trainable weights (the frozen base left
                            out under LoRA), optimizer, scheduler, steps done and the torch RNG
        driver_state.json   step, weights version, data cursor, the last evaluation's metrics
        in_flight.pkl       async: the generations submitted ahead of the update (prompts and
                            trajectories), so a resumed run trains on exactly those
        config.yaml         the resolved config of the run
        COMPLETE            written last, before the rename
    latest                  the name of the newest complete checkpoint (replaced atomically)

A crash mid-write leaves a ``.tmp-step-*`` folder that is ignored and cleaned up next time; the
previous checkpoint stays intact and loadable.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointManager:
    def __init__(self, output_dir: Union[str, Path]) -> None:
        self.root = Path(output_dir) / "checkpoints"

    def begin(self, step: int) -> Path:
        """A fresh temporary folder to write step ``step``'s checkpoint into."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".tmp-step-{step:06d}"
        tmp.mkdir()
        return tmp

    def commit(self, step: int, tmp: Path) -> Path:
        (tmp / COMPLETE).write_text(str(step))
        final = self.root / f"step-{step:06d}"
        if final.exists():  # re-saving a step (e.g. after a resume) replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = self.root / "latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, self.root / "latest")
        return final

    def latest(self) -> Optional[Path]:
        return find_latest_checkpoint(self.root)

    def save(self, state: "DriverState", save_learners, config_yaml: str) -> Path:
        """Step ``state.step``'s checkpoint: the learners' part (``save_learners(folder)``), the trainer's
        state and the run's config, committed atomically."""
        tmp = self.begin(state.step)
        save_learners(str(tmp))
        state.write(tmp)
        (tmp / "config.yaml").write_text(config_yaml)
        return self.commit(state.step, tmp)


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def find_latest_checkpoint(path: Union[str, Path]) -> Optional[Path]:
    """Newest complete checkpoint in ``path``: a checkpoint itself, its parent, or an output dir."""
    path = Path(path)
    if is_complete(path):
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if is_complete(named):
            return named
    steps = sorted(
        (int(m.group(1)), p) for p in root.glob("step-*") if (m := _STEP_DIR.match(p.name)) and is_complete(p)
    )
    return steps[-1][1] if steps else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@dataclass
class DriverState:
    """What the trainer itself keeps in a checkpoint (the learners keep theirs)."""

    step: int
    version: int
    sampler: dict[str, int]  # the data cursor, after every row drawn so far
    eval: dict[str, float] = field(default_factory=dict)  # eval/<key> of the newest evaluation
    in_flight: list[dict[str, Any]] = field(default_factory=list)  # RolloutClient.in_flight_state()

    def write(self, folder: Path) -> None:
        write_json(folder / "driver_state.json",
                   {"step": self.step, "version": self.version, "sampler": self.sampler, "eval": self.eval})
        if self.in_flight:
            with open(folder / "in_flight.pkl", "wb") as f:
                pickle.dump(self.in_flight, f)

    @classmethod
    def read(cls, folder: Path) -> "DriverState":
        state = read_json(folder / "driver_state.json")
        in_flight = []
        if (folder / "in_flight.pkl").is_file():
            with open(folder / "in_flight.pkl", "rb") as f:
                in_flight = pickle.load(f)
        return cls(int(state["step"]), int(state["version"]), dict(state["sampler"]), dict(state.get("eval", {})),
                   in_flight)
