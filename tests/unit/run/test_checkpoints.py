"""Checkpoints are atomic: a write interrupted midway leaves the previous checkpoint intact and found."""

from __future__ import annotations

import json

import pytest

from grpo_ray.run.checkpoints import CheckpointManager, find_latest_checkpoint, is_complete

pytestmark = pytest.mark.unit


def _write(folder, step):
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"weights-%d" % step)
    (folder / "driver_state.json").write_text(json.dumps({"step": step}))


def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    tmp = manager.begin(5)
    _write(tmp, 5)
    good = manager.commit(5, tmp)
    # step 10 dies half-written: some files there, never committed
    tmp = manager.begin(10)
    (tmp / "adapter").mkdir()
    (tmp / "adapter" / "adapter_model.safetensors").write_bytes(b"half")
    latest = find_latest_checkpoint(tmp_path)
    assert latest == good and is_complete(latest)
    assert (latest / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights-5"
    assert json.loads((latest / "driver_state.json").read_text())["step"] == 5
    # the next save clears the leftover and commits normally
    tmp = manager.begin(10)
    assert not any((tmp_path / "checkpoints").glob(".tmp-step-*/adapter"))
    _write(tmp, 10)
    assert manager.commit(10, tmp).name == "step-000010" and find_latest_checkpoint(tmp_path).name == "step-000010"


def test_a_pointer_to_a_missing_or_incomplete_checkpoint_falls_back(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    for step in (1, 2):
        tmp = manager.begin(step)
        _write(tmp, step)
        manager.commit(step, tmp)
    (tmp_path / "checkpoints" / "step-000002" / "COMPLETE").unlink()  # e.g. a copy that lost its marker
    assert find_latest_checkpoint(tmp_path).name == "step-000001"
