"""The vllm_transfer strategy's pieces without an engine: the plan learner rank 0 makes and what each
engine is told from it, the check that rank 0 sends what the plan announced, the gloo wire (learner
rank 0's end against vLLM's engine class as grpo_ray registers it, with a recording model in place of
vLLM's), and the errors a rollout worker gives when its engine cannot take the transfer. The whole
path through vLLM's engine is tests/integration/test_vllm_transfer.py."""

from __future__ import annotations

import socket
import threading

import pytest
import torch

from grpo_ray.errors import UserError
from grpo_ray.sync.base import SyncTopology
from grpo_ray.sync.vllm_transfer import GLOO, NCCL, GlooEndpoint, TransferPlan, VllmTransferSync, checked

from ..learner.helpers import bare_learner, load_tiny_model

pytestmark = pytest.mark.unit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_learner():
    from grpo_ray.config import AlgoConfig, LearnerConfig

    learner = bare_learner(load_tiny_model(), LearnerConfig(), AlgoConfig(), rows=4)
    return learner


def test_the_plan_names_every_weight_rank_0_sends_and_its_tensors_are_the_parameters_themselves() -> None:
    learner = tiny_learner()
    plan = VllmTransferSync(bucket_bytes=1 << 20).plan(learner)
    assert plan.backend == GLOO and plan.bucket_bytes == 1 << 20  # a CPU learner: grpo_ray's gloo backend
    state = list(learner.full_state(on_device=True))
    assert [p[0] for p in plan.params] == [n for n, _ in state]
    assert [(p[1], list(p[2])) for p in plan.params] == [(str(t.dtype)[6:], list(t.shape)) for _, t in state]
    params = dict(learner.peft_model.named_parameters())
    assert all(t.data_ptr() == params[n].data_ptr() for n, t in state)  # no copy on the device
    assert all(t.data_ptr() != params[n].data_ptr() for n, t in learner.full_state())  # the host copies, as before

    info = plan.init_info(("10.0.0.1", 2900), rank_offset=5, world_size=9)
    assert info == {"master_address": "10.0.0.1", "master_port": 2900, "rank_offset": 5, "world_size": 9,
                    "packed": True, "packed_buffer_size_bytes": 1 << 20, "timeout_s": plan.timeout_s}
    nccl = TransferPlan(NCCL, plan.params, 1 << 20, 30.0)
    assert "timeout_s" not in nccl.init_info(("h", 1), 1, 2)  # vLLM's own NCCL init info has no such field
    update = plan.update_info()
    assert update["names"] == [p[0] for p in plan.params] and update["shapes"][0] == list(plan.params[0][2])


def test_rank_0_may_send_only_what_the_plan_announced() -> None:
    plan = (("a", "float32", [2]), ("b", "float32", [3]))
    good = [("a", torch.zeros(2)), ("b", torch.zeros(3))]
    assert [n for n, _ in checked(iter(good), plan)] == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"sending \('b', 'float32', \[4\]\), but the plan .* says \('b', 'float32', \[3\]\)"):
        list(checked(iter([good[0], ("b", torch.zeros(4))]), plan))
    with pytest.raises(RuntimeError, match="announced 'b', which learner rank 0 does not hold"):
        list(checked(iter(good[:1]), plan))


def test_the_gloo_wire_delivers_rank_0s_buckets_to_every_engine_cut_from_the_plan_alone() -> None:
    """Learner rank 0's GlooEndpoint against two engines' receiving side (vLLM's engine class with grpo_ray's
    wire): each cuts the same buckets from the plan's names, dtypes and shapes, and loads exactly rank 0's
    tensors, bucket by bucket."""
    from grpo_ray.rollout.engines.vllm_transfer_gloo import GlooWeightTransferEngine, GlooWeightTransferInitInfo

    weights = {"w": torch.randn(30, 4), "b16": torch.randn(7).to(torch.bfloat16), "ids": torch.arange(5),
               "big": torch.randn(100)}
    plan = TransferPlan(GLOO, tuple((n, str(t.dtype)[6:], list(t.shape)) for n, t in weights.items()), 512, 20.0)

    class Model:  # records what vLLM's model would load
        def __init__(self):
            self.calls = []

        def load_weights(self, pairs):
            self.calls.append({n: t.clone() for n, t in pairs})

    class Parallel:  # one engine worker: vLLM's data-parallel index and rank within the engine
        data_parallel_index, world_size, rank = 0, 1, 0

    address, engines = ("127.0.0.1", free_port()), []
    for i in range(2):
        engine = GlooWeightTransferEngine.__new__(GlooWeightTransferEngine)  # no vLLM config: the wire is under test
        engine.parallel_config, engine.model = Parallel(), Model()
        engines.append(engine)
    joins = [threading.Thread(target=e.init_transfer_engine, args=(GlooWeightTransferInitInfo(
        **plan.init_info(address, 1 + i, 3)),)) for i, e in enumerate(engines)]
    for t in joins:
        t.start()
    sender = GlooEndpoint(address, 3, plan.bucket_bytes, plan.timeout_s)
    for t in joins:
        t.join(timeout=30)
    receives = [threading.Thread(target=e.update_weights, args=(plan.update_info(),)) for e in engines]
    for t in receives:
        t.start()
    sent = sender.send(checked(iter(weights.items()), plan.params))
    for t in receives:
        t.join(timeout=30)
    for engine in engines:
        assert [list(c) for c in engine.model.calls] == [["w", "b16"], ["ids", "big"]]  # 480 + 14 bytes; 40 + 400
        got = {n: t for call in engine.model.calls for n, t in call.items()}
        assert all(torch.equal(got[n], t) and got[n].dtype == t.dtype for n, t in weights.items())
        engine.shutdown()
    assert sent >= sum(t.numel() * t.element_size() for t in weights.values())
    sender.close()


def test_a_rollout_worker_whose_engine_cannot_take_the_transfer_says_why() -> None:
    plan = TransferPlan(NCCL, (), 1, 1.0)
    topology = SyncTopology(1, 1, ("127.0.0.1", 1), plan=plan)

    class Engine:
        weight_transfer_backend = None

    with pytest.raises(UserError, match="learners send over nccl .GPUs., but this rollout worker's engine was started "
                                        "without vLLM's weight transfer"):
        VllmTransferSync().connect("rollout", 0, topology, engine=Engine())
    Engine.weight_transfer_backend = GLOO
    with pytest.raises(UserError, match="receives over grpo_ray_gloo; put the learners and the rollout engines both on GPUs"):
        VllmTransferSync().connect("rollout", 0, topology, engine=Engine())


def test_rank_0_keeps_in_step_with_the_other_ranks_gathers_when_its_send_fails() -> None:
    """A send that stops part-way (here: a weight the plan did not announce) still walks every weight, so
    the other ranks' ZeRO-3 gathers are all matched before the error goes up."""
    walked = []

    class Learner:
        def full_state(self, on_device=False):
            for name in ("a", "b", "c"):
                walked.append(name)
                yield name, torch.zeros(2)

    class Wire:  # rank 0's end: takes what it is given until the check stops it
        def send(self, state):
            return sum(1 for _ in state)

        def close(self):
            pass

    sync = VllmTransferSync()
    sync.topology = SyncTopology(1, 1, plan=TransferPlan(GLOO, (("a", "float32", [2]), ("x", "float32", [2]),
                                                                ("c", "float32", [2])), 64, 1.0))
    sync.group = Wire()
    with pytest.raises(RuntimeError, match=r"sending \('b', 'float32', \[2\]\), but the plan .* says \('x'"):
        sync.send(Learner(), 3, put=None, live=True)
    assert walked == ["a", "b", "c"]


def test_an_engine_whose_transfer_fails_falls_back_to_the_object_store() -> None:
    """vLLM's worker processes re-raise the wire's error as their own: whatever the engine raises, the
    worker leaves the group and loads the version from the store."""
    from grpo_ray.wire import FullWeights, WeightsHandle

    class Engine:
        weight_transfer_backend, version, loaded = GLOO, -1, None

        def receive_weight_transfer(self, update_info):
            raise RuntimeError("Worker failed with error 'Read error', please check the stack trace above")

        def leave_weight_transfer(self):
            self.left = True

        def load_weights(self, buckets):
            self.loaded = [dict(b) for b in buckets]

    from grpo_ray.sync.object_store import _Bucket
    from grpo_ray.sync.vllm_transfer import EngineEnd

    engine, sync = Engine(), VllmTransferSync()
    sync.topology = SyncTopology(1, 1, plan=TransferPlan(GLOO, (), 64, 1.0))
    sync.group = EngineEnd(engine)
    store = {"update": FullWeights(4, ["b"], 8), "b": _Bucket({"w": torch.ones(2)})}
    sync.receive(engine, WeightsHandle(4, "update", "line", "vllm_transfer"), store.__getitem__, live=True)
    assert engine.version == 4 and engine.left and not sync.connected
    assert torch.equal(engine.loaded[0]["w"], torch.ones(2))
