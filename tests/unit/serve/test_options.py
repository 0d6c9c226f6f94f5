"""What ``grpo-ray serve`` resolves before Ray starts, and the vLLM arguments it becomes."""

from __future__ import annotations

import json

import pytest

from grpo_ray.errors import UserError
from grpo_ray.serve.options import ServeOptions, resolve_adapters, vllm_server_args

pytestmark = pytest.mark.unit


def _adapter(folder, r=8):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r}))
    return folder


def test_names_ranks_and_vllm_args(tmp_path) -> None:
    a = _adapter(tmp_path / "math" / "adapter", r=64)
    b = _adapter(tmp_path / "med", r=16)
    adapters = resolve_adapters([str(a), f"doc={b}", "builtin:arithmetic-tuned=" + str(b)])
    assert [x.name for x in adapters] == ["math", "doc", "builtin:arithmetic-tuned"]
    opts = ServeOptions(model="/m", model_name="base", adapters=adapters[:2])
    args = vllm_server_args(opts, on_cpu=True)
    assert args[args.index("--max-lora-rank") + 1] == "64" and "--enable-lora" in args
    assert args[args.index("--lora-modules") + 1:args.index("--lora-modules") + 3] == [f"math={a}", f"doc={b}"]
    assert "--no-enable-chunked-prefill" in args and args[args.index("--dtype") + 1] == "float32"
    bare = vllm_server_args(ServeOptions(model="/m", model_name="base"), on_cpu=False)
    assert "--enable-lora" not in bare and "--gpu-memory-utilization" in bare


def test_builtin_and_round_trip() -> None:
    opts = ServeOptions.from_dict({"model": "builtin:arithmetic-base", "adapters": ["builtin:arithmetic-tuned"]})
    assert opts.model_name == "arithmetic-base" and opts.adapters[0].name == "arithmetic-tuned"
    assert opts.adapters[0].rank == 64
    assert ServeOptions.from_dict(opts.to_dict()) == opts  # what the replica receives


@pytest.mark.parametrize("specs, expected", [
    (["/nowhere"], "no such folder"),
    (["x=builtin:arithmetic-tuned", "x=builtin:arithmetic-tuned"], "is taken"),
    (["bad name=builtin:arithmetic-tuned"], "must be letters"),
])
def test_bad_adapters_are_one_line(specs, expected) -> None:
    with pytest.raises(UserError, match=expected) as err:
        resolve_adapters(specs)
    assert "\n" not in str(err.value)


def test_the_serve_deploy_example_names_real_things() -> None:
    """examples/serve/serve_config.yaml: its import path and deployment exist, its args are options."""
    import dataclasses
    import importlib
    from pathlib import Path

    import yaml

    from grpo_ray.serve.app import DEPLOYMENT

    doc = yaml.safe_load((Path(__file__).resolve().parents[3] / "examples" / "serve" / "serve_config.yaml").read_text())
    app = doc["applications"][0]
    module, attr = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert app["deployments"][0]["name"] == DEPLOYMENT and "autoscaling_config" in app["deployments"][0]
    known = {f.name for f in dataclasses.fields(ServeOptions)} | {"adapters", "replicas", "autoscaling"}
    assert set(app["args"]) <= known


def test_run_prompts_are_found_before_ray_starts_and_reach_the_replica(tmp_path) -> None:
    """Each adapter's training run (the config.yaml beside its checkpoint) gives its served name a
    prompt recipe; the replica gets them through to_dict; run_prompt=False finds none."""
    from grpo_ray.config import DataConfig, GRPOConfig

    ckpt = tmp_path / "out" / "checkpoints" / "step-000001"
    _adapter(ckpt / "adapter")
    data = DataConfig(assistant_prefix="<reasoning>\n", demonstrations=[{"question": "q", "answer": "a"}])
    (ckpt / "config.yaml").write_text(GRPOConfig(data=data).to_yaml())
    (ckpt / "COMPLETE").write_text("1")
    raw = {"model": "builtin:arithmetic-base", "adapters": [f"run={tmp_path / 'out'}", "builtin:arithmetic-tuned"]}
    opts = ServeOptions.from_dict(raw)
    assert [(p.model, p.recipe.assistant_prefix, p.recipe.demonstrations) for p in opts.prompts] == \
        [("run", "<reasoning>\n", (("q", "a"),))]
    assert ServeOptions.from_dict(opts.to_dict()) == opts
    assert ServeOptions.from_dict({**raw, "run_prompt": False}).prompts == ()


def test_a_replica_gets_at_least_its_tensor_parallel_gpus() -> None:
    with pytest.raises(UserError, match=r"num_gpus=1 with tensor_parallel_size=2: .* needs num_gpus >= 2"):
        ServeOptions.from_dict({"model": "builtin:arithmetic-base", "num_gpus": 1, "tensor_parallel_size": 2})
    ok = ServeOptions.from_dict({"model": "builtin:arithmetic-base", "num_gpus": 2, "tensor_parallel_size": 2,
                                 "run_prompt": False})
    assert ok.num_gpus == 2
