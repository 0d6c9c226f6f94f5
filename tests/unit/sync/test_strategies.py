"""The weight-sync strategies on their own: what the learner side exports and what the rollout side hands
its engine. The learner and engine here are stand-ins (the strategies are what is tested; the real
ones are driven by tests/integration/test_engine.py and test_vllm_merge.py)."""

from __future__ import annotations

import pickle

import pytest
import torch

from grpo_ray.config import load_config
from grpo_ray.sync import WEIGHT_SYNCS, FullSync, SyncTopology
from grpo_ray.wire import FullWeights, LoraAdapter, WeightsHandle

pytestmark = pytest.mark.unit


class Learner:
    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.state = {f"w{i}": torch.full((4, 4), float(i)) for i in range(5)}  # 64 bytes each

    def lora_tensors(self):
        return {"a.lora_A.weight": torch.ones(2, 4)}

    def lora_config_dict(self):
        return {"r": 2}

    def full_state(self):  # rank 0 copies; under ZeRO-3 the others would yield (name, None)
        if self.rank == 0:
            yield from self.state.items()


class Engine:
    version = -1

    def __init__(self) -> None:
        self.loaded, self.adapters = [], []

    def apply_lora(self, adapter):
        self.adapters.append(adapter.version)

    def load_weights(self, buckets):
        for bucket in buckets:  # consumed one at a time
            self.loaded.append(sorted(bucket))


def test_auto_follows_lora_and_a_strategy_that_does_not_fit_is_refused() -> None:
    assert load_config(None, []).sync_strategy == "lora"
    assert load_config(None, ["model.lora.enabled=false"]).sync_strategy == "full"
    assert WEIGHT_SYNCS.names() == ["broadcast", "full", "lora", "vllm_transfer"]
    from grpo_ray.config import ConfigError

    with pytest.raises(ConfigError, match=r"^sync.strategy=lora: full fine-tuning has no adapter"):
        load_config(None, ["model.lora.enabled=false", "sync.strategy=lora"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=full: with a LoRA adapter"):
        load_config(None, ["sync.strategy=full"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=broadcast: with a LoRA adapter"):
        load_config(None, ["sync.strategy=broadcast"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=broadcast: its gloo transport .* use sync.strategy=vllm_transfer"):
        load_config(None, ["model.lora.enabled=false", "sync.strategy=broadcast", "rollout.num_gpus_per_worker=1"])
    assert load_config(None, ["model.lora.enabled=false", "sync.strategy=broadcast"]).sync_strategy == "broadcast"


def test_vllm_transfer_is_refused_where_its_transfer_cannot_run() -> None:
    from grpo_ray.config import ConfigError

    full = ["model.lora.enabled=false", "sync.strategy=vllm_transfer"]
    assert load_config(None, full).sync_strategy == "vllm_transfer"
    assert load_config(None, [*full, "rollout.num_gpus_per_worker=2", "rollout.tensor_parallel_size=2",
                              "learner.num_gpus_per_learner=1"]).sync_strategy == "vllm_transfer"
    with pytest.raises(ConfigError, match=r"^sync.strategy=vllm_transfer: with a LoRA adapter"):
        load_config(None, ["sync.strategy=vllm_transfer"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=vllm_transfer: .* rollout.engine=hf has none"):
        load_config(None, [*full, "rollout.engine=hf"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=vllm_transfer with trainer.colocate: NCCL"):
        load_config(None, [*full, "trainer.colocate=true"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=vllm_transfer: rollout.num_gpus_per_worker=1 and "
                                          r"learner.num_gpus_per_learner=0; .* GPUs or neither"):
        load_config(None, [*full, "rollout.num_gpus_per_worker=1", "learner.num_gpus_per_learner=0"])
    with pytest.raises(ConfigError, match=r"^sync.strategy=vllm_transfer: learner.num_gpus_per_learner=0.5; NCCL "
                                          r"cannot put two processes that share a GPU"):
        load_config(None, [*full, "learner.num_gpus_per_learner=0.5", "rollout.num_gpus_per_worker=1"])
    with pytest.raises(ConfigError, match=r"^rollout.inflight_weight_updates with sync.strategy=vllm_transfer"):
        load_config(None, [*full, "trainer.async_rollout=true", "rollout.inflight_weight_updates=true"])


def test_the_receiver_takes_the_handles_update_from_the_store_after_connecting() -> None:
    sync = WEIGHT_SYNCS.get("lora")()
    sync.connect("rollout", 1, SyncTopology(num_learners=2, num_rollouts=3))
    engine = Engine()
    store = {"ref": LoraAdapter(4, {}, {})}
    sync.receive(engine, WeightsHandle(4, "ref", "line"), fetch=store.__getitem__)
    assert engine.adapters == [4] and engine.version == 4


def test_lora_rank0_exports_the_adapter_and_the_engine_holds_its_version() -> None:
    sync = WEIGHT_SYNCS.get("lora")()
    assert sync.send(Learner(1), 3, put=None) is None
    update = sync.send(Learner(0), 3, put=None)
    assert isinstance(update, LoraAdapter) and update.version == 3 and update.peft_config == {"r": 2}
    engine = Engine()
    sync.apply(engine, update, fetch=None)
    assert engine.adapters == [3] and engine.version == 3


def test_full_weights_go_in_buckets_through_the_store_and_arrive_in_order() -> None:
    store = []

    def put(obj):
        store.append(pickle.dumps(obj, protocol=5))  # what the object store does to a bucket
        return len(store) - 1

    sync = FullSync(bucket_bytes=150)  # two 64-byte tensors per bucket
    assert sync.send(Learner(1), 7, put) is None and store == []  # other ranks only join the gather
    update = sync.send(Learner(0), 7, put)
    assert isinstance(update, FullWeights) and update.version == 7 and update.total_bytes == 5 * 64
    assert len(update.buckets) == 3
    engine = Engine()
    sync.apply(engine, update, fetch=lambda ref: pickle.loads(store[ref]))
    assert engine.loaded == [["w0", "w1"], ["w2", "w3"], ["w4"]] and engine.version == 7
