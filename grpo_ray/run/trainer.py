"""The single controller of a GRPO run: the loop, with each of its jobs in a collaborator.

It holds no model weights. One training step reads as its phases:

    generate (rollout workers) -> score (reward workers) -> [refill: dynamic sampling] -> advantages
    -> [prefetch: async generations ahead] -> [sleep: colocated engines free their GPUs]
    -> update + sync (learners -> rollout workers)
    -> [evaluate] -> log -> checkpoint

Each phase's wall time is logged as ``timing/<phase>``. The collaborators, each tested on its own with
fake workers (``tests/unit/run``):

- :class:`~grpo_ray.run.rollout_client.RolloutClient`: prompts drawn and turned into trajectories, now
  or ahead of time;
- :class:`~grpo_ray.run.reward_client.RewardClient`: the reward inputs, split over the reward workers;
- :class:`~grpo_ray.run.learner_group.LearnerGroup`: update, weight sync, snapshots and recovery;
- :class:`~grpo_ray.run.checkpoints.CheckpointManager` and :class:`~grpo_ray.run.checkpoints.DriverState`;
- :class:`~grpo_ray.run.evaluator.HeldOutEval`: held-out evaluation.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from grpo_ray.cluster import Workers, async_core_contention, init_ray
from grpo_ray.config import GRPOConfig
from grpo_ray.data.training import TrainingData
from grpo_ray.errors import NonFiniteUpdate, cause_of
from grpo_ray.run.batch import build_step_batch, combined_rewards
from grpo_ray.run.checkpoints import CheckpointManager, DriverState, find_latest_checkpoint
from grpo_ray.run.dynamic import Scored, fill_informative, group_loss_mask
from grpo_ray.run.evaluator import HeldOutEval
from grpo_ray.run.learner_group import LearnerDied, LearnerGroup, RewindToCheckpoint
from grpo_ray.run.metrics import MetricLogger, PhaseTimer
from grpo_ray.run.report import write_run_report
from grpo_ray.run.reporting import inflight_metrics, reward_metrics, rollout_metrics, sample_rows
from grpo_ray.run.reward_client import RewardClient
from grpo_ray.run.rollout_client import RolloutClient
from grpo_ray.run.shards import RAY, Calls, FaultCounter

log = logging.getLogger("grpo_ray.trainer")

__all__ = ["GRPOTrainer", "LearnerDied"]


def load_tokenizer(cfg: GRPOConfig) -> Any:
    """The tokenizer the driver renders and counts prompts with: transformers' ``AutoTokenizer`` for the
    run's model. Importing it imports transformers' model auto classes too (3 s and about 230 MiB in a
    process that holds no model), so a sweep calls this once and pickles the result to its trials: the
    unpickled tokenizer imports only its own class."""
    from transformers import AutoTokenizer

    from grpo_ray.models.paths import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name_or_path))


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.trainer.output_dir)
        self.step = 0  # completed steps
        self.workers: Optional[Workers] = None
        self.timer = PhaseTimer()
        self.faults = FaultCounter()
        self.checkpoints = CheckpointManager(self.output_dir)
        self.fresh = True  # a new run, not a resumed one (its metric files start empty)

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, *, learners: bool = True, workers: Optional[Workers] = None, trial_group=None,
              tokenizer: Any = None) -> "GRPOTrainer":
        """Load data, start the actors, and resume if asked. ``workers`` lets a caller reuse running
        rollout actors (tests share one vLLM engine); reward workers and learners are started fresh
        from this run's config, since they hold its reward functions and optimizer state.
        ``trial_group``: a Ray Tune trial's placement group, which the actors take their bundles from.
        ``tokenizer``: the model's tokenizer, already loaded by :func:`load_tokenizer` (a sweep loads it
        once and hands it to each trial's driver, which then never imports transformers' auto classes)."""
        cfg = self.cfg
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
        data = TrainingData(cfg, self.tokenizer)
        eval_rows = data.eval_rows() if cfg.eval.enabled else []
        init_ray(cfg)
        if workers is None:
            workers = Workers.start(cfg, learners=learners, trial_group=trial_group)
        else:
            workers.start_rewards(cfg)
            if learners:
                workers.start_learners(cfg)
        contention = async_core_contention(cfg, os.cpu_count() or 1, workers.placement)
        if contention:
            log.warning(contention)
        self.attach(workers, data, eval_rows)
        if learners:
            self.start()
        return self

    def attach(self, workers: Any, data: Any, eval_rows: Optional[list] = None, *, calls: Calls = RAY) -> None:
        """The collaborators over ``workers`` and ``data`` (``setup`` passes the run's actors; unit tests
        pass fake workers and calls)."""
        self.workers, self.data = workers, data
        self.evaluator = HeldOutEval(self.cfg, eval_rows or [], self.output_dir)
        self.rollout = RolloutClient(self.cfg, workers.rollouts, data, self.faults, calls=calls)
        self.rewards = RewardClient(workers.rewards, self.faults, calls=calls)
        self.learners = LearnerGroup(self.cfg, workers, self.faults, calls=calls)

    def start(self) -> None:
        """Connect the weight sync, then resume (``trainer.resume``) or start fresh."""
        self.learners.connect()
        self._resume_or_start()

    def _resume_or_start(self) -> None:
        resume = self.cfg.trainer.resume
        ckpt = find_latest_checkpoint(resume) if resume else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"trainer.resume={resume!r}: no complete checkpoint there")
        if ckpt is not None:
            self._load_checkpoint(ckpt)
            self.fresh = False
            log.info("resumed from %s at step %d", ckpt, self.step)
        else:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(self.cfg.to_yaml())
        self.learners.publish(self.step)

    def _load_checkpoint(self, ckpt: Path) -> None:
        state = DriverState.read(ckpt)
        self.learners.load(str(ckpt), state.version)
        self.step = state.step
        self.data.sampler.load_state_dict(state.sampler)
        self.rollout.restore_in_flight(state.in_flight)
        self.evaluator.last = dict(state.eval)

    def shutdown(self) -> None:
        if self.workers is not None:
            self.workers.shutdown()
            self.workers = None

    # -- the loop -------------------------------------------------------------------------------
    def train(self, on_step: Optional[Callable[[int, dict, Optional[Path]], None]] = None) -> list[dict[str, float]]:
        """Run to ``trainer.steps``. ``on_step(step, metrics, checkpoint)`` is called after each step is
        logged and checkpointed (``checkpoint``: the folder saved at this step, or None); a Tune
        trial reports through it."""
        history = []
        with MetricLogger(self.cfg.trainer, start_step=self.step, run_config=self.cfg.to_dict(), fresh=self.fresh) as logger:
            if self.evaluator.enabled and self.step == 0:
                before = self.evaluate()  # the starting policy
                logger.log(0, before)
                history.append({"step": 0, **before})
            while self.step < self.cfg.trainer.steps:
                try:
                    metrics, samples = self.train_step()
                except RewindToCheckpoint as rewind:
                    self.rewind(str(rewind), logger)
                    history = [h for h in history if h["step"] <= self.step]
                    continue
                if self.evaluator.due(self.step):
                    metrics.update(self.evaluate())
                logger.log(self.step, metrics)
                if samples:
                    logger.log_completions(self.step, samples)
                history.append({"step": self.step, **metrics})
                saved = self.maybe_checkpoint()
                if on_step is not None:
                    on_step(self.step, metrics, saved)
        write_run_report(self.cfg, history)
        return history

    def train_step(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """One GRPO step. Returns its metrics and, on logging steps, a few sample trajectories."""
        t, a, learners = self.timer, self.cfg.algo, self.learners
        step_start = time.perf_counter()
        with t.phase("generate"):  # async: only the wait for what was submitted during earlier updates
            rows, rollouts = self.rollout.next_batch(self.step, learners.weights)
        with t.phase("score"):
            drawn = kept = Scored(rows, rollouts, self.rewards.score(rows, rollouts))
        in_loss, sampling_metrics = None, {}
        if a.dynamic_sampling:
            with t.phase("refill"):  # more prompts until the step has B groups whose rewards differ
                filled = fill_informative(drawn, self.extra_round, a.dynamic_sampling_max_rounds)
                kept, drawn = filled.kept, filled.drawn
                in_loss = group_loss_mask(filled.in_loss, rollouts.group_size)
                sampling_metrics = filled.metrics
        with t.phase("advantages"):
            batch = build_step_batch(kept.scores, kept.rollouts, a, in_loss)
        if self.rollout.pipeline.steps_to_submit(self.step, self.cfg.trainer.steps):
            with t.phase("prefetch"):  # the next steps' generations run on the rollout workers during this update
                self.rollout.prefetch(self.step, self.cfg.trainer.steps, learners.weights)
        try:
            learner_metrics = learners.learn(kept.rollouts, batch, self.step, timer=t,
                                             generating=self.rollout.generating_ahead)
        except LearnerDied as died:
            raise LearnerDied(f"{died}; the last complete checkpoint is {self.checkpoints.latest() or 'none yet'}; "
                              f"continue with --resume {self.output_dir}") from None
        except NonFiniteUpdate as refused:  # the learners kept the weights of step self.step
            raise NonFiniteUpdate(
                f"step {self.step + 1}: {cause_of(refused)}; the run stops, and its last complete checkpoint is "
                f"{self.checkpoints.latest() or 'none yet'} (a lower learner.lr or learner.max_grad_norm may help)"
            ) from None
        self.step += 1
        metrics = {
            # how many updates the sampling weights were behind the learner when this batch was drawn
            "policy_version_lag": float(learners.version - 1 - kept.rollouts.policy_version),
            "policy_version": float(learners.version),
            **rollout_metrics(drawn.rollouts, combined_rewards(drawn.scores), drawn.scores),
            **inflight_metrics(kept.rollouts, learners.version - 1),
            **(reward_metrics(batch.rewards, rollouts.group_size, "kept/") if a.dynamic_sampling else {}),
            **sampling_metrics,
            **learner_metrics,
            **self.faults.step_metrics(),
            **t.pop(),
            "timing/step": time.perf_counter() - step_start,
        }
        every = self.cfg.trainer.log_completions_every
        samples = sample_rows(kept.rows, kept.rollouts, batch.rewards, kept.scores) if every and not self.step % every else []
        return metrics, samples

    def extra_round(self, round_: int) -> Scored:
        """Dynamic sampling: B more prompts, generated now under the current weights and scored."""
        rows, rollouts = self.rollout.extra_round(self.step, round_, self.learners.weights)
        return Scored(rows, rollouts, self.rewards.score(rows, rollouts))

    def rewind(self, why: str, logger: MetricLogger) -> None:
        """Back to the last complete checkpoint (or the start): the learners load it, the trainer takes its
        step, weights version, data cursor and in-flight generations, and the metric sinks drop the
        steps after it, so every step is logged once."""
        ckpt = self.checkpoints.latest()
        log.warning("%s: going back to %s", why, ckpt or "the start of the run")
        self.timer.pop()  # the abandoned step's phases
        self.rollout.pipeline.clear()  # generations for steps that will be drawn again
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        else:  # the new learners are the run's starting point
            self.step = 0
            self.data.sampler.load_state_dict({"epoch": 0, "cursor": 0})
        logger.resume_from(self.step)
        self.learners.restart_lineage(self.learners.version if ckpt is not None else 0)
        self.learners.publish(self.step)

    @property
    def version(self) -> int:
        """The weights version the rollout workers sample with: the number of updates applied."""
        return self.learners.version

    # -- evaluation, samples, report ------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        return self.evaluator.run(self.step, self.rollout, self.learners.weights)

    @property
    def last_eval(self) -> dict[str, float]:
        return self.evaluator.last

    # -- checkpoints ----------------------------------------------------------------------------
    def maybe_checkpoint(self) -> Optional[Path]:
        every, steps = self.cfg.trainer.save_every, self.cfg.trainer.steps
        if self.step == steps or (every and self.step % every == 0):
            return self.save_checkpoint()
        return None

    def save_checkpoint(self) -> Path:
        """Every learner rank's state and the trainer's (waiting for the generations in flight, which
        the checkpoint keeps), written atomically."""
        state = DriverState(self.step, self.learners.version, self.data.sampler.state_dict(), self.evaluator.last,
                            self.rollout.in_flight_state())
        return self.checkpoints.save(state, self.learners.save, self.cfg.to_yaml())
