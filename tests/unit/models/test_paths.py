from __future__ import annotations

import json
import shutil

import pytest

from grpo_ray.run.checkpoints import CheckpointManager
from grpo_ray.models.paths import ADAPTER_POINTER, resolve_adapter_path, write_adapter_pointer

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


def test_a_folder_that_names_its_adapter(tmp_path) -> None:
    inside = _adapter(tmp_path / "sweep" / "trial_b" / "run" / "checkpoints" / "step-000004" / "adapter")
    pointer = write_adapter_pointer(tmp_path / "sweep", inside)
    assert json.loads(pointer.read_text()) == {"adapter": "trial_b/run/checkpoints/step-000004/adapter"}
    assert resolve_adapter_path(str(tmp_path / "sweep")) == inside
    shutil.copytree(tmp_path / "sweep", tmp_path / "moved")  # relative, so a copied folder names its own copy
    moved = tmp_path / "moved" / "trial_b" / "run" / "checkpoints" / "step-000004" / "adapter"
    assert resolve_adapter_path(str(tmp_path / "moved")) == moved

    outside = _adapter(tmp_path / "elsewhere")
    write_adapter_pointer(tmp_path / "named", outside)
    assert json.loads((tmp_path / "named" / ADAPTER_POINTER).read_text()) == {"adapter": str(outside.resolve())}
    assert resolve_adapter_path(str(tmp_path / "named")) == outside.resolve()

    write_adapter_pointer(tmp_path / "named", None)  # nothing to name: the pointer goes
    assert not (tmp_path / "named" / ADAPTER_POINTER).exists()


def test_a_broken_pointer_is_one_line_naming_it(tmp_path) -> None:
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / ADAPTER_POINTER).write_text(json.dumps({"adapter": "trial/adapter"}))
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / ADAPTER_POINTER).write_text("{not json")
    for folder, message in [("gone", "names .*trial/adapter.*not a PEFT adapter folder"),
                            ("garbled", 'must hold {"adapter": PATH}')]:
        with pytest.raises(FileNotFoundError, match=message) as err:
            resolve_adapter_path(str(tmp_path / folder))
        assert "\n" not in str(err.value) and ADAPTER_POINTER in str(err.value)
