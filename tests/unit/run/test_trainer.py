"""The trainer's loop with fake workers, no Ray: what a step logs, exact resume in every mode (async with
generations in flight and dynamic sampling included), and the way back to a checkpoint when a learner
dies with its snapshot."""

from __future__ import annotations

import json

import pytest

from grpo_ray.errors import NonFiniteUpdate
from grpo_ray.run.trainer import GRPOTrainer
from tests.unit.run.fakes import FakeCalls, FakeData, FakeWorkers, Lost, Value

pytestmark = pytest.mark.unit

ASYNC_DYNAMIC = ("trainer.async_rollout=true", "trainer.max_policy_lag=2", "algo.dynamic_sampling=true")


def trainer_for(cfg) -> tuple[GRPOTrainer, FakeWorkers]:
    trainer, workers = GRPOTrainer(cfg), FakeWorkers()
    trainer.attach(workers, FakeData(), calls=FakeCalls())
    trainer.start()
    return trainer, workers


def run_to(trainer: GRPOTrainer, step: int) -> list[dict]:
    out = []
    while trainer.step < step:
        metrics, _ = trainer.train_step()
        trainer.maybe_checkpoint()
        out.append({k: v for k, v in metrics.items() if not k.startswith("timing/")})
    return out


@pytest.mark.parametrize("mode", [(), ASYNC_DYNAMIC], ids=["sync", "async-K2-dynamic"])
def test_a_resumed_run_goes_on_exactly_as_the_uninterrupted_one(make_cfg, tmp_path, mode) -> None:
    full, full_workers = trainer_for(make_cfg(*mode, f"trainer.output_dir={tmp_path / 'full'}"))
    expected = run_to(full, 6)

    first, _ = trainer_for(make_cfg(*mode, "trainer.save_every=3", f"trainer.output_dir={tmp_path / 'cut'}"))
    run_to(first, 3)  # a checkpoint at step 3, generations for steps 4 and 5 in flight (async)
    resumed, workers = trainer_for(make_cfg(*mode, f"trainer.output_dir={tmp_path / 'cut'}",
                                            f"trainer.resume={tmp_path / 'cut'}"))
    assert resumed.step == 3
    got = run_to(resumed, 6)
    assert got == expected[3:]  # rewards, lag, prompts drawn, what the learners trained on
    assert [a.obj.trained for a in workers.learners] == [a.obj.trained for a in full_workers.learners]


def test_async_samples_k_versions_behind_and_never_more(make_cfg) -> None:
    trainer, _ = trainer_for(make_cfg("trainer.async_rollout=true", "trainer.max_policy_lag=2"))
    lags = [m["policy_version_lag"] for m in run_to(trainer, 6)]
    assert lags == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]


def test_dynamic_sampling_logs_what_it_drew_and_what_it_kept(make_cfg) -> None:
    trainer, _ = trainer_for(make_cfg("algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=5"))
    for m in run_to(trainer, 4):
        drawn_groups = m["sampling/prompts_drawn"]
        assert m["kept/frac_reward_zero_std"] == 0.0  # enough informative groups: only those are kept
        # every drawn group is in the unlabelled statistics: the ones dropped for having no spread too
        assert m["frac_reward_zero_std"] == pytest.approx(1 - m["sampling/informative_groups"] / drawn_groups)
        assert m["rollout/engine_generate_s"] == 0.5 * m["sampling/rounds"]


def test_the_engines_throughput_is_tokens_over_their_own_generation_time(make_cfg) -> None:
    trainer, _ = trainer_for(make_cfg("trainer.async_rollout=true"))
    for m in run_to(trainer, 3):
        assert m["rollout/engine_tokens_per_s"] == m["rollout/completion_tokens"] / 0.5


def test_a_learner_lost_with_its_snapshot_sends_the_run_back_to_its_checkpoint(make_cfg, tmp_path) -> None:
    full, full_workers = trainer_for(make_cfg(f"trainer.output_dir={tmp_path / 'full'}"))
    full.train()

    trainer, workers = trainer_for(make_cfg("trainer.save_every=2", f"trainer.output_dir={tmp_path / 'rewind'}"))
    original = trainer.train_step

    def step_that_loses_everything():
        if trainer.step == 3 and workers.learner_starts == 1:
            workers.learners[1].die_during("train_step", for_good=True)
            trainer.learners.snapshots._files = [Value(Lost("node gone")) for _ in trainer.learners.snapshots._files]
        return original()

    trainer.train_step = step_that_loses_everything
    trainer.train()
    assert workers.learner_starts == 2
    assert [a.obj.trained for a in workers.learners] == [a.obj.trained for a in full_workers.learners]
    logged = [json.loads(line)["step"] for line in (tmp_path / "rewind" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]  # steps 3.. were done again and each is logged once


def test_an_update_the_learners_refuse_stops_the_run_and_names_its_last_checkpoint(make_cfg, tmp_path) -> None:
    """A learner refuses an update whose loss went nan (tests/unit/learner/test_nonfinite.py): the run
    stops at the step before it with one line naming the step and the checkpoint to go back to, and
    logs no step that was not made."""
    trainer, workers = trainer_for(make_cfg("trainer.save_every=2", f"trainer.output_dir={tmp_path}"))
    original = trainer.train_step

    def step_whose_loss_goes_nan():
        if trainer.step == 3:
            for learner in workers.learners:
                learner.obj.refuse = "the loss is nan on rank 0 (learner update 4), so the update was not applied"
        return original()

    trainer.train_step = step_whose_loss_goes_nan
    with pytest.raises(NonFiniteUpdate) as refused:
        trainer.train()
    message = str(refused.value)
    assert message.startswith("step 4: the loss is nan on rank 0 (learner update 4), so the update was not applied")
    assert str(tmp_path / "checkpoints" / "step-000002") in message and "\n" not in message
    assert trainer.step == 3 and trainer.learners.version == 3
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]
