"""The NF4-rounded checkpoint the vLLM engine serves holds exactly the numbers the NF4 learner computes
with: its logprobs equal the 4-bit model's training forward, and differ from the unrounded base's."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.unit
bnb = pytest.importorskip("bitsandbytes")


def test_rounded_base_equals_the_nf4_training_forward(tmp_path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.nf4 import nf4_config, nf4_rounded_checkpoint, rounded_checkpoint_dir
    from grpo_ray.models.paths import resolve_model_path

    monkeypatch.setenv("GRPO_RAY_CACHE", str(tmp_path))
    path = resolve_model_path("builtin:arithmetic-base")
    rounded = nf4_rounded_checkpoint(path, dtype="float32", device="cpu")
    assert rounded == rounded_checkpoint_dir(path, dtype="float32", device="cpu")  # the launch plan names it
    assert nf4_rounded_checkpoint(path, dtype="float32", device="cpu") == rounded  # made once

    served = AutoModelForCausalLM.from_pretrained(str(rounded), dtype=torch.float32)
    quantized = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=nf4_config(torch.float32),
                                                     device_map={"": "cpu"})
    original = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for p in quantized.parameters():
        p.requires_grad_(False)
    quantized.model.embed_tokens.weight.requires_grad_(True)  # a training forward: dequantize, then matmul
    ids = torch.randint(3, 400, (2, 20), generator=torch.Generator().manual_seed(0))
    nf4 = torch.log_softmax(quantized(ids).logits, -1)
    with torch.no_grad():
        same = torch.log_softmax(served(ids).logits, -1)
        unrounded = torch.log_softmax(original(ids).logits, -1)
    assert float((same - nf4).abs().max()) == 0.0
    assert float((unrounded - nf4).abs().max()) > 0.1


def test_the_nf4_learner_trains_after_a_no_grad_eval_forward() -> None:
    """The learner's forwards alternate between no-grad (old or reference logprobs, eval) and training.
    On CPUs with AVX-512 BF16 bitsandbytes repacks a 4-bit weight for inference at the first eval-mode
    no-grad forward, after which a training forward raised; the learner's model must still train."""
    from grpo_ray.config import load_config
    from grpo_ray.learner.model import build_policy_model

    cfg = load_config(None, ["model.load_in_4bit=true", "model.dtype=float32", "model.lora.r=4"])
    model, _ = build_policy_model(cfg.model, cfg.learner, device=torch.device("cpu"))
    ids = torch.randint(3, 400, (2, 12), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        before = model(ids).logits
    model.train()
    loss = model(ids).logits.float().logsumexp(-1).mean()
    loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]  # A gets no gradient while B = 0
    assert lora and all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora)
    assert any(float(p.grad.abs().sum()) > 0 for p in lora)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # no update happened: the same numbers as before


def test_rollout_workers_of_a_node_build_the_rounded_copy_once(tmp_path, monkeypatch) -> None:
    """Several rollout workers asking at once: one builds (in a subprocess, stood in for here), the
    others wait on the lock and take its folder; a later call reuses it without building."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from grpo_ray.models import nf4

    monkeypatch.setenv("GRPO_RAY_CACHE", str(tmp_path))
    builds = []

    def fake_subprocess_build(*, out: str, **args) -> None:
        builds.append(args)
        time.sleep(0.3)  # long enough for the others to arrive while it builds
        Path(out, "config.json").write_text("{}")
        Path(out, nf4.DESCRIPTION_FILE).write_text("{}")

    monkeypatch.setattr(nf4, "write_rounded_in_subprocess", fake_subprocess_build)
    start = threading.Barrier(3)

    def worker(_: int) -> Path:
        start.wait()
        return nf4.nf4_rounded_checkpoint("some/model", dtype="bfloat16", device="cpu")

    with ThreadPoolExecutor(3) as pool:
        folders = set(pool.map(worker, range(3)))
    assert len(builds) == 1 and folders == {nf4.rounded_checkpoint_dir("some/model", dtype="bfloat16", device="cpu")}
    assert builds[0] == {"model_path": "some/model", "dtype": "bfloat16", "device": "cpu", "trust_remote_code": False,
                         "revision": None}
    assert nf4.nf4_rounded_checkpoint("some/model", dtype="bfloat16", device="cpu") in folders and len(builds) == 1


def test_a_failed_subprocess_build_raises_with_its_output(tmp_path) -> None:
    from grpo_ray.models.nf4 import write_rounded_in_subprocess

    # a child that dies at once (no dtype to read) stands in for one that fails to load the model
    with pytest.raises(RuntimeError, match=r"(?s)building the NF4-rounded copy of /no/such/model failed \(exit 1\):\n"
                                           r".*KeyError: 'dtype'"):
        write_rounded_in_subprocess(model_path="/no/such/model", out=str(tmp_path / "out"))
