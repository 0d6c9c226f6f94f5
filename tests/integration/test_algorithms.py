"""Every algorithm switch through the real engine and learner: each advantage estimator and policy
objective updates one real batch (scored with the soft overlong reward among others), dynamic
sampling's data cursor is exact across a checkpoint and resume, and full fine-tuning learns the task
through the broadcast weight sync.

The session's vLLM rollout actor on the built-in model (``builtin_vllm``); each run starts its own learner.
"""

from __future__ import annotations

import json
import math

import pytest

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import builtin_config

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def cluster(builtin_vllm):
    return builtin_vllm


def config(out, *overrides):
    return builtin_config(out, *overrides)


class Interrupted(Exception):
    pass


def train(cluster, out, *overrides, stop_after=None):
    """Train; with ``stop_after``, the run is cut off once that step is logged and checkpointed."""
    def on_step(step, metrics, saved):
        if step == stop_after:
            raise Interrupted

    trainer = GRPOTrainer(config(out, *overrides)).setup(workers=cluster)
    try:
        return trainer.train(on_step=on_step)
    except Interrupted:
        return None
    finally:
        trainer.workers.stop_learners()


SWITCHES = {
    "grpo": (),
    "rloo": ("algo.advantage_estimator=rloo", "algo.scale_rewards=none"),
    "reinforce_pp_baseline": ("algo.advantage_estimator=reinforce_pp_baseline", "algo.scale_rewards=none"),
    "cispo": ("algo.policy_objective=cispo",),
    "sapo": ("algo.policy_objective=sapo",),
    "delta": ("algo.delta=1.5",),
}
SOFT_OVERLONG = ("reward.functions=[{name: correctness}, {name: xml_count}, "
                 "{name: soft_overlong, kwargs: {max_completion_len: 48, soft_punish_cache: 16}}]")


def test_every_switch_changes_the_update_on_one_real_batch(cluster, tmp_path):
    """One batch from the engine, scored with the soft overlong reward among others; one learner then
    updates it under each advantage estimator and policy objective in turn (its algorithm settings
    replaced between updates). With one update per batch and no sampler correction the ratio is 1, so
    the clip objective's loss is the hand-computable -sum(A_i * |o_i|) / sum(|o_i|) (dapo) whatever the
    weights, the estimators give that formula their own advantages, and the other objectives give losses
    of their own."""
    import ray

    from grpo_ray.run.batch import build_step_batch
    from grpo_ray.wire import split_into_shards

    common = ("trainer.prompts_per_step=8", "algo.sampler_correction=false", SOFT_OVERLONG)
    trainer = GRPOTrainer(config(tmp_path, *common)).setup(workers=cluster)
    try:
        rows, rollouts = trainer.rollout.next_batch(0, None)
        scores = trainer.rewards.score(rows, rollouts)
        assert scores.names[2] == "soft_overlong" and all(r[2] <= 0 for r in scores.rewards)
        learner, losses = trainer.workers.learners[0], {}
        for name, switch in SWITCHES.items():
            algo = config(tmp_path, *common, *switch).algo
            batch = build_step_batch(scores, rollouts, algo)
            shard = split_into_shards(rollouts.group_prompt_ids(), rollouts.completion_ids, batch.advantages.tolist(),
                                      batch.loss_mask, 1, rollouts.sampling_logprobs)[0]
            ray.get(learner.__ray_call__.remote(lambda actor, a: setattr(actor.learner, "algo", a), algo))
            metrics = ray.get(learner.train_step.remote(shard))
            assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0, (name, metrics)
            losses[name] = metrics["loss"]
            if name in ("grpo", "rloo", "reinforce_pp_baseline", "delta"):
                lengths = [sum(m) for m in batch.loss_mask]
                expected = -sum(a * n for a, n in zip(batch.advantages.tolist(), lengths)) / sum(lengths)
                assert metrics["loss"] == pytest.approx(expected, rel=2e-2, abs=1e-4), name
            if name == "cispo":
                assert "cispo_clip_ratio" in metrics
    finally:
        trainer.workers.stop_learners()
    # each estimator's advantages and each objective's loss really differ on the same batch
    assert len({round(v, 6) for k, v in losses.items() if k != "delta"}) == len(SWITCHES) - 1, losses
    assert losses["delta"] == pytest.approx(losses["grpo"], rel=1e-6)  # two-sided clipping is idle at ratio 1


def test_dynamic_sampling_resumes_to_the_uninterrupted_run(cluster, tmp_path):
    """Correctness alone: the base model is mostly wrong, so many groups are all 0; each step draws more
    prompts until it has B groups with a spread (or its rounds run out). Generation runs two steps ahead
    of the update (async, K=2). A run cut at its step-2 checkpoint, with the generations of steps 3 and 4
    in flight, and resumed draws the same prompts, rounds and groups, at the same lag, as the whole run."""
    dyn = ("reward.functions=[{name: correctness}]", "algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=3",
           "trainer.async_rollout=true", "trainer.max_policy_lag=2")
    whole = train(cluster, tmp_path / "whole", *dyn, "trainer.steps=4")
    for h in whole:
        assert h["sampling/prompts_drawn"] == 4 * h["sampling/rounds"]
        if h["sampling/informative_groups"] >= 4:
            assert h["kept/frac_reward_zero_std"] == 0.0  # every trained group has a spread
        # the unlabelled statistics are over every drawn group, the uninformative ones too
        assert h["frac_reward_zero_std"] == pytest.approx(1 - h["sampling/informative_groups"] / h["sampling/prompts_drawn"])
    assert max(h["sampling/rounds"] for h in whole) > 1  # it did draw more
    train(cluster, tmp_path / "split", *dyn, "trainer.steps=4", "trainer.save_every=2", stop_after=2)
    assert (tmp_path / "split" / "checkpoints" / "step-000002" / "in_flight.pkl").is_file()
    resumed = train(cluster, tmp_path / "split", *dyn, "trainer.steps=4", f"trainer.resume={tmp_path / 'split'}")
    # The data cursor is exact: the same prompts, rounds and groups; the loss agrees to float rounding
    # (a fresh learner process may sum in another order, as in the engine's resume test).
    assert [h["policy_version_lag"] for h in whole] == [0.0, 1.0, 2.0, 2.0]
    keys = ["reward", "kept/reward", "sampling/rounds", "sampling/informative_groups", "sampling/prompts_drawn",
            "policy_version_lag"]
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in whole[2:]]
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in whole[2:]], rel=1e-5, abs=1e-6)
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_full_fine_tuning_learns_the_task_through_a_weight_broadcast_that_survives_a_dead_rollout_actor(cluster, tmp_path):
    """Every weight trains (no LoRA) and each step's full weights go from learner rank 0 into the vLLM
    engine over the broadcast strategy's gloo group, in buckets; the built-in model learns to work the
    problem (held-out hard correctness rises). The rollout actor is killed after step 4: its restarted
    process is in no group, so it gets version 4 from the learners through the object store, the group
    is connected again, and the later versions are broadcast again."""
    import os
    import signal

    import ray

    rollout = cluster.rollouts[0]
    pid = ray.get(rollout.__ray_call__.remote(lambda self: os.getpid()))

    def kill_after_step_4(step, metrics, saved):
        if step == 4:
            os.kill(pid, signal.SIGKILL)

    trainer = GRPOTrainer(config(tmp_path, "model.lora.enabled=false", "sync.strategy=broadcast", "learner.lr=1e-4",
                                 "trainer.steps=10", "trainer.prompts_per_step=8", "rollout.group_size=8",
                                 "learner.micro_batch_size=64", "eval.enabled=true", "eval.limit=100", "eval.every=0",
                                 "trainer.save_every=10")).setup(workers=cluster)
    try:
        history = trainer.train(on_step=kill_after_step_4)
    finally:
        trainer.workers.stop_learners()
    before, after = history[0]["eval/hard_correctness"], history[-1]["eval/hard_correctness"]
    assert after >= before + 0.05, (before, after)
    assert all(h["sync/load_seconds_max"] > 0 for h in history[1:])  # the full weights were loaded every step
    assert [h["sync/broadcast_complete"] for h in history[1:]] == [1.0] * 10  # step 5's after a new group
    assert ray.get(rollout.__ray_call__.remote(lambda self: os.getpid())) != pid
    assert trainer.faults.total["rollout"] >= 1  # step 5's shard went to the restarted actor
    assert (tmp_path / "checkpoints" / "step-000010" / "model" / "config.json").is_file()  # the exportable model
