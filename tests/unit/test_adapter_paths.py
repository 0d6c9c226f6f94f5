from __future__ import annotations

import pytest

from grpo_ray.checkpoint import CheckpointManager
from grpo_ray.models.paths import resolve_adapter_path

pytestmark = pytest.mark.unit


def _adapter(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_peft_folder_checkpoint_and_output_dir(tmp_path) -> None:
    peft = _adapter(tmp_path / "peft")
    assert resolve_adapter_path(str(peft)) == peft
    manager = CheckpointManager(tmp_path / "run")
    for step in (5, 10):
        tmp = manager.begin(step)
        _adapter(tmp / "adapter")
        manager.commit(step, tmp)
    latest = tmp_path / "run" / "checkpoints" / "step-000010"
    assert resolve_adapter_path(str(tmp_path / "run")) == latest / "adapter"
    assert resolve_adapter_path(str(tmp_path / "run" / "checkpoints" / "step-000005")) == (
        tmp_path / "run" / "checkpoints" / "step-000005" / "adapter"
    )


def test_bad_adapters_get_one_line(tmp_path) -> None:
    for spec, message in [
        (str(tmp_path / "nope"), "no such folder"),
        (str(tmp_path), "not a PEFT adapter folder"),
        ("builtin:nope", "no such built-in adapter"),
    ]:
        with pytest.raises(FileNotFoundError, match=message) as err:
            resolve_adapter_path(spec)
        assert "\n" not in str(err.value)


def test_sweep_dir_gives_its_best_trials_adapter(tmp_path) -> None:
    import json

    best = _adapter(tmp_path / "sweep" / "trial_b" / "run" / "checkpoints" / "step-000004" / "adapter")
    (tmp_path / "sweep" / "best_trial.json").write_text(json.dumps({"adapter": str(best)}))
    assert resolve_adapter_path(str(tmp_path / "sweep")) == best
