"""AdapterPayload crosses the Ray object store as numpy buffers (zero-copy) and comes back exact."""

from __future__ import annotations

import pickle

import pytest
import torch

from grpo_ray.rollout.adapters import AdapterPayload

pytestmark = pytest.mark.unit


def payload() -> AdapterPayload:
    g = torch.Generator().manual_seed(0)
    return AdapterPayload(
        version=7,
        tensors={
            "base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(4, 16, generator=g),
            "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(16, 4, generator=g).to(torch.bfloat16),
            "base_model.model.layers.0.v_proj.lora_A.weight": torch.randn(4, 16, generator=g).to(torch.float16),
        },
        peft_config={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    )


def test_round_trip_keeps_values_dtypes_and_config() -> None:
    p = payload()
    back = pickle.loads(pickle.dumps(p, protocol=5))
    assert back.version == 7 and back.peft_config == p.peft_config
    assert back.tensors.keys() == p.tensors.keys()
    for k, t in p.tensors.items():
        assert back.tensors[k].dtype == t.dtype and torch.equal(back.tensors[k], t)


def test_tensors_travel_out_of_band() -> None:
    """With protocol 5 (what Ray uses) the tensor bytes leave the pickle as buffers, one per tensor:
    the object store then hands them to the reader without copying them through the pickle stream."""
    p = payload()
    buffers = []
    data = pickle.dumps(p, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == len(p.tensors)
    assert sum(b.raw().nbytes for b in buffers) == p.num_bytes()
    assert len(data) < 1024  # names and config only
    back = pickle.loads(data, buffers=buffers)
    assert all(torch.equal(back.tensors[k], t) for k, t in p.tensors.items())


def test_read_only_buffers_are_not_written_through() -> None:
    """The object store's buffers are read-only and shared by every reader on the node: the receiver
    gets its own tensors, and writing to them leaves the stored bytes as they were."""
    p = payload()
    buffers = []
    data = pickle.dumps(p, protocol=5, buffer_callback=buffers.append)
    stored = [bytes(b.raw()) for b in buffers]  # bytes: read-only buffers, as the object store's
    kept = [bytearray(s) for s in stored]  # copies (bytes(s) would be s itself)
    back = pickle.loads(data, buffers=[pickle.PickleBuffer(s) for s in stored])
    for t in back.tensors.values():
        t.add_(1)
    assert [bytearray(s) for s in stored] == kept
    k = "base_model.model.layers.0.q_proj.lora_A.weight"
    assert torch.allclose(back.tensors[k], p.tensors[k] + 1)
