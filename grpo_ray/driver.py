"""The single controller of a GRPO run.

It holds no model weights. It owns the step counter, the weights version, the metric sinks and the
checkpoint schedule, and moves batches between the actors. One training step reads as its phases:

    generate (rollout workers) -> score (reward workers) -> [refill: dynamic sampling] -> advantages
    -> [prefetch: async generations ahead] -> update (learners) -> sync weights (learner -> rollout)
    -> [evaluate] -> log -> checkpoint

Each phase's wall time is logged as ``timing/<phase>``. Data, the batch math, the async pipeline and
the step's reporting live in ``grpo_ray.run``. Held-out evaluation (greedy, on the ``eval.split``
prompts, through the same rollout workers and the synced weights) runs before the first step, every
``eval.every`` steps and after the last one; its table metrics are logged as ``eval/<key>`` and each
result is kept as ``eval/step-N.json`` in the output dir.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import ray

from grpo_ray.actors.recovery import PendingShards, run_shards
from grpo_ray.actors.sync import WeightHandoff
from grpo_ray.checkpoint import CheckpointManager, find_latest_checkpoint, read_json, write_json
from grpo_ray.cluster import Workers, async_core_contention, init_ray
from grpo_ray.config import GRPOConfig
from grpo_ray.data.prompts import with_assistant_prefix
from grpo_ray.evaluation.records import write_eval_json
from grpo_ray.evaluation.table import metrics_for_rows, score_eval
from grpo_ray.metrics import MetricLogger, PhaseTimer
from grpo_ray.models.paths import resolve_model_path
from grpo_ray.report import plot_report, read_metric_rows
from grpo_ray.rewards.scorer import ScoreResult, merge_score_results, split_for_workers
from grpo_ray.rollout.prompting import per_prompt_seeds
from grpo_ray.run.batch import build_step_batch, combined_rewards
from grpo_ray.run.data import TrainingData
from grpo_ray.run.dynamic import Scored, fill_informative, group_loss_mask
from grpo_ray.run.learner_recovery import LearnerSnapshots, SnapshotLost, dead_learners
from grpo_ray.run.pipeline import GenerationPipeline, InFlight
from grpo_ray.run.reporting import rollout_metrics, sample_rows
from grpo_ray.utils.reduce import reduce_named
from grpo_ray.wire import GenerationRequest, RolloutBatch, SamplingConfig, contiguous_slices, split_into_shards

log = logging.getLogger("grpo_ray.driver")

# Extra dynamic-sampling rounds of a step draw their own seeds, far from every step's own.
_ROUND_SEED_STRIDE = 1_000_000_007


class LearnerDied(RuntimeError):
    """The learners keep dying: the run stops (resume from a checkpoint)."""


class RewindToCheckpoint(Exception):
    """A learner died and its snapshot with it: the run goes back to the last checkpoint (or the start)."""


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.trainer.output_dir)
        self.step = 0  # completed steps
        self.version = 0  # weights version on the rollout workers: the number of updates applied
        self.workers: Optional[Workers] = None
        self.timer = PhaseTimer()
        self.eval_rows: list[dict[str, Any]] = []
        self.eval_metrics: tuple = ()  # the table's rows for these held-out answers
        self.last_eval: dict[str, float] = {}  # eval/<key> of the newest evaluation (kept in checkpoints)
        self.faults = {"rollout": 0, "reward": 0, "learner": 0}  # shards / updates sent again after their actor died
        tr = cfg.trainer
        self.pipeline = GenerationPipeline(tr.max_policy_lag if tr.async_rollout else 0)
        self.weights = None  # the WeightsHandle of ``version``: every generation shard carries one
        self.lineage = uuid.uuid4().hex[:12]  # names this run's line of weights versions (see WeightsHandle)
        snapshot = cfg.learner.snapshot_state
        self.snapshots = LearnerSnapshots(cfg.model.lora.enabled if snapshot is None else snapshot)

    # ---------------------------------------------------------------------------------------
    # setup
    # ---------------------------------------------------------------------------------------
    def setup(self, *, learners: bool = True, workers: Optional[Workers] = None, trial_group=None) -> "GRPOTrainer":
        """Load data, start the actors, and resume if asked. ``workers`` lets a caller reuse running
        rollout actors (tests share one vLLM engine); reward workers and learners are started fresh
        from this run's config, since they hold its reward functions and optimizer state.
        ``trial_group``: a Ray Tune trial's placement group, which the actors take their bundles from."""
        from transformers import AutoTokenizer

        cfg = self.cfg
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name_or_path))
        self.data = TrainingData(cfg, self.tokenizer)
        if cfg.eval.enabled:
            self.eval_rows = self.data.eval_rows()
            self.eval_metrics = metrics_for_rows(self.eval_rows)
        self.checkpoints = CheckpointManager(self.output_dir)
        init_ray(cfg)
        if workers is None:
            self.workers = Workers.start(cfg, learners=learners, trial_group=trial_group)
        else:
            self.workers = workers
            workers.start_rewards(cfg)
            if learners:
                workers.start_learners(cfg)
        contention = async_core_contention(cfg, os.cpu_count() or 1, self.workers.placement)
        if contention:
            log.warning(contention)
        if learners:
            self._resume_or_start()
        return self

    @property
    def dataset(self):
        return self.data.dataset

    @property
    def sampler(self):
        return self.data.sampler

    def _resume_or_start(self) -> None:
        resume = self.cfg.trainer.resume
        ckpt = find_latest_checkpoint(resume) if resume else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"trainer.resume={resume!r}: no complete checkpoint there")
        if ckpt is not None:
            self._load_checkpoint(ckpt)
            log.info("resumed from %s at step %d", ckpt, self.step)
        else:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(self.cfg.to_yaml())
        self._send_current_weights()

    def _load_checkpoint(self, ckpt: Path) -> None:
        """Every learner rank, the step and weights version, the data cursor and the last eval from ``ckpt``."""
        state = read_json(ckpt / "driver_state.json")
        ray.get([learner.load.remote(str(ckpt)) for learner in self.workers.learners])
        self.step, self.version = int(state["step"]), int(state["version"])
        self.sampler.load_state_dict(state["sampler"])
        self.last_eval = dict(state.get("eval", {}))

    def _send_current_weights(self) -> None:
        """A fresh or restarted rollout worker holds no weights: send the current version before any work,
        and keep a snapshot of the learners as they are."""
        handoff = WeightHandoff(self.workers.learners, self.workers.rollouts, self.version, lineage=self.lineage)
        handoff.wait()
        self.weights = handoff.handle
        self.snapshots.take(self.workers.learners, self.step)

    def shutdown(self) -> None:
        if self.workers is not None:
            self.workers.shutdown()
            self.workers = None

    # ---------------------------------------------------------------------------------------
    # the loop
    # ---------------------------------------------------------------------------------------
    def train(self, on_step: Optional[Callable[[int, dict, Optional[Path]], None]] = None) -> list[dict[str, float]]:
        """Run to ``trainer.steps``. ``on_step(step, metrics, checkpoint)`` is called after each step is
        logged and checkpointed (``checkpoint``: the folder saved at this step, or None); a Tune
        trial reports through it."""
        history = []
        with MetricLogger(self.cfg.trainer, start_step=self.step, run_config=self.cfg.to_dict()) as logger:
            if self.eval_rows and self.step == 0:
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
                if self.eval_due():
                    metrics.update(self.evaluate())
                logger.log(self.step, metrics)
                if samples:
                    logger.log_completions(self.step, samples)
                history.append({"step": self.step, **metrics})
                saved = self.maybe_checkpoint()
                if on_step is not None:
                    on_step(self.step, metrics, saved)
        self.write_report(history)
        return history

    def write_report(self, history: list[dict[str, Any]]) -> Path:
        """``report.png`` from the whole run's ``metrics.jsonl`` (resumed runs included), or from
        this process's history when the JSONL sink is off."""
        rows = read_metric_rows(self.output_dir / "metrics.jsonl") or history
        return plot_report(rows, self.output_dir / "report.png", title=f"GRPO: {self.cfg.model.name_or_path} on {self.cfg.data.source}")

    def train_step(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """One GRPO step. Returns its metrics and, on logging steps, a few sample completions."""
        t, a = self.timer, self.cfg.algo
        step_start = time.perf_counter()
        faults_before = dict(self.faults)
        with t.phase("generate"):  # async: only the wait for what was submitted during earlier updates
            rows, rollouts, gen_seconds = self.generation(self.step)
        with t.phase("score"):
            scored = Scored(rows, rollouts, self.score(rows, rollouts))
        in_loss, sampling_metrics = None, {}
        if a.dynamic_sampling:
            with t.phase("refill"):  # more prompts until the step has B groups whose rewards differ
                scored, groups, sampling_metrics = fill_informative(scored, self.extra_round, a.dynamic_sampling_max_rounds)
                in_loss = group_loss_mask(groups, scored.rollouts.group_size)
        rows, rollouts, scores = scored.rows, scored.rollouts, scored.scores
        with t.phase("advantages"):
            batch = build_step_batch(scores, rollouts, a, in_loss)
        ahead = self.pipeline.steps_to_submit(self.step, self.cfg.trainer.steps)
        if ahead:
            with t.phase("prefetch"):  # the next steps' generations run on the rollout workers during this update
                self.prefetch(ahead)
        learner_metrics, sync_metrics = self.learn(rollouts, batch)  # update, then sync the new weights
        self.version += 1
        self.step += 1
        self.snapshots.take(self.workers.learners, self.step)  # queued behind the export: the driver does not wait
        metrics = {
            # how many updates the sampling weights were behind the learner when this batch was drawn
            "policy_version_lag": float(self.version - 1 - rollouts.policy_version),
            "policy_version": float(self.version),
            **rollout_metrics(rollouts, batch.rewards, scores, gen_seconds),
            **sampling_metrics,
            **learner_metrics,
            **sync_metrics,
            **self.snapshots.metrics(),
            **self._fault_metrics(faults_before),
            **t.pop(),
            "timing/step": time.perf_counter() - step_start,
        }
        return metrics, self.sample_table(rows, rollouts, batch.rewards, scores)

    # -- phases ---------------------------------------------------------------------------------
    def sampling(self, step: int, round_: int = 0) -> SamplingConfig:
        r = self.cfg.rollout
        return SamplingConfig(
            n=r.group_size, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
            max_tokens=r.max_completion_tokens, seed=self.cfg.trainer.seed * 100_003 + step + round_ * _ROUND_SEED_STRIDE,
        )

    def sample_prompts(self) -> list[dict[str, Any]]:
        return self.data.sample_prompts(self.cfg.trainer.prompts_per_step)

    def generation(self, step: int) -> tuple[list, RolloutBatch, float]:
        """Step ``step``'s prompts and completions: submitted earlier (async), or now."""
        ahead = self.pipeline.pop(step)
        if ahead is not None:
            rollouts = self._collect(ahead.pending)
            return ahead.rows, rollouts, time.perf_counter() - ahead.submitted
        start = time.perf_counter()
        rows = self.sample_prompts()
        rollouts = self.generate(rows, step)
        return rows, rollouts, time.perf_counter() - start

    def extra_round(self, round_: int) -> Scored:
        """Dynamic sampling: B more prompts, generated now under the current weights and scored."""
        rows = self.sample_prompts()
        rollouts = self._collect(self._submit_generation([r["prompt"] for r in rows], self.sampling(self.step, round_)))
        return Scored(rows, rollouts, self.score(rows, rollouts))

    def prefetch(self, steps: list[int]) -> None:
        """Async: submit the generations of ``steps`` (up to K ahead), under the newest published weights."""
        for step in steps:
            sampler_state = self.sampler.state_dict()  # a checkpoint must not skip the drawn rows
            rows = self.sample_prompts()
            pending = self._submit_generation([r["prompt"] for r in rows], self.sampling(step))
            self.pipeline.push(InFlight(step, rows, pending, sampler_state))

    def sync(self, handoff: WeightHandoff) -> dict[str, float]:
        """Wait for the weights the update produced to be published and, unless later generations are in
        flight (async: the rollout workers load them as the first part of their next shard, while the
        learner runs the next update), loaded by every rollout worker."""
        metrics, resent = handoff.wait()
        self.weights = handoff.handle
        self.faults["rollout"] += resent
        return metrics

    def generate(self, rows: list[dict[str, Any]], step: Optional[int] = None) -> RolloutBatch:
        sampling = self.sampling(self.step if step is None else step)
        return self._collect(self._submit_generation([row["prompt"] for row in rows], sampling))

    def _submit_generation(self, prompts: list, sampling: SamplingConfig) -> PendingShards:
        """The prompts split over the rollout workers in contiguous slices, each under the current weights
        (kept in its request, so a shard sent again after a worker's death is sampled the same way)."""
        seeds = per_prompt_seeds(sampling.seed, len(prompts))  # global indices: sharding changes nothing
        parts = contiguous_slices(len(prompts), len(self.workers.rollouts))
        busy = [(w, s) for w, s in zip(self.workers.rollouts, parts) if s.stop > s.start]
        return PendingShards(
            "rollout", [w for w, _ in busy],
            [GenerationRequest(prompts[s], sampling, seeds[s], self.weights) for _, s in busy],
            lambda worker, request: worker.generate.remote(request),
        )

    def _collect(self, pending: PendingShards) -> RolloutBatch:
        batches, resent = pending.result()
        self.faults["rollout"] += resent
        return RolloutBatch.concat(batches)

    def score(self, rows: list[dict[str, Any]], rollouts: RolloutBatch) -> ScoreResult:
        g = rollouts.group_size
        prompts = [row["prompt"] for row in rows for _ in range(g)]
        texts = with_assistant_prefix(prompts, rollouts.completion_texts)  # the whole reply: prefix + generated
        completions = [[{"role": "assistant", "content": text}] for text in texts]
        columns = {k: [row[k] for row in rows for _ in range(g)] for k in rows[0] if k != "prompt"}
        columns["completion_ids"] = rollouts.completion_ids
        parts = split_for_workers(len(completions), g, len(self.workers.rewards))
        results, resent = run_shards(
            "reward", self.workers.rewards[: len(parts)], parts,
            lambda worker, s: worker.score.remote(prompts[s], completions[s], {k: v[s] for k, v in columns.items()}),
        )
        self.faults["reward"] += resent
        result = merge_score_results(results)
        for message in result.new_errors:
            log.warning("reward function failed: %s", message)
        return result

    def learn(self, rollouts: RolloutBatch, batch, max_attempts: int = 3) -> tuple[dict[str, float], dict[str, float]]:
        """The update and the sync of the weights it makes. A learner that dies in either is replaced:
        the group starts again from its snapshot of the last step, and the step is sent again."""
        for attempt in range(1, max_attempts + 1):
            try:
                with self.timer.phase("update"):  # the new weights' hand-off is queued behind it on every actor
                    learner_metrics, handoff = self.update(rollouts, batch)
                with self.timer.phase("sync"):
                    return learner_metrics, self.sync(handoff)
            except ray.exceptions.RayError as err:
                dead = dead_learners(self.workers.learners)
                if not dead:
                    raise
                if attempt == max_attempts:
                    raise LearnerDied(f"learners died {attempt} times in step {self.step + 1}; the last complete "
                                      f"checkpoint is {self.checkpoints.latest() or 'none yet'}; continue with "
                                      f"--resume {self.output_dir}") from None
                with self.timer.phase("learner_recovery"):
                    self.recover_learners(dead, err)
        raise AssertionError("unreachable")

    def recover_learners(self, dead: list[int], err: Exception) -> None:
        """A new learner group, restored from the snapshot of the last completed step; RewindToCheckpoint
        when the snapshot cannot be had."""
        log.warning("learner rank(s) %s died during step %d (%s); starting the learner group again", dead,
                    self.step + 1, str(err).splitlines()[0][:160])
        self.faults["learner"] += 1
        # A rank that survived its failed update may still export its half-updated weights under the
        # step's version number, and a rollout worker may load them: the restored learners' versions are
        # a new line, which every worker loads again.
        self.lineage = uuid.uuid4().hex[:12]
        self.workers.start_learners(self.cfg)
        try:
            self.snapshots.restore(self.workers.learners)
        except SnapshotLost as lost:
            raise RewindToCheckpoint(str(lost)) from None
        log.warning("learners restored from their snapshot of step %d; sending step %d again", self.snapshots.step,
                    self.step + 1)

    def rewind(self, why: str, logger: MetricLogger) -> None:
        """Back to the last complete checkpoint (or the start): the learners load it, the driver takes its
        step, weights version and data cursor, and the metric sinks drop the steps after it, so every
        step is logged once."""
        ckpt = self.checkpoints.latest()
        log.warning("%s: going back to %s", why, ckpt or "the start of the run")
        self.timer.pop()  # the abandoned step's phases
        for item in list(self.pipeline.in_flight):  # generations for steps that will be drawn again
            self.pipeline.in_flight.remove(item)
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        else:  # the new learners are the run's starting point
            self.step, self.version = 0, 0
            self.sampler.load_state_dict({"epoch": 0, "cursor": 0})
        logger.resume_from(self.step)
        self.lineage = uuid.uuid4().hex[:12]  # versions after this are a new line: workers must load them
        self._send_current_weights()

    def update(self, rollouts: RolloutBatch, batch) -> tuple[dict[str, float], WeightHandoff]:
        """Split the rows evenly over the learners; every rank steps its optimizer once per iteration.
        Returns the learners' metrics (joined by kind over ranks) and the hand-off of the weights this
        update makes, queued on the actors before the wait (a load only where no generation is in flight)."""
        shards = split_into_shards(
            rollouts.group_prompt_ids(), rollouts.completion_ids, batch.advantages.tolist(), batch.loss_mask,
            len(self.workers.learners), rollouts.sampling_logprobs,
        )
        refs = [learner.train_step.remote(shard) for learner, shard in zip(self.workers.learners, shards)]
        handoff = WeightHandoff(self.workers.learners, self.workers.rollouts, self.version + 1, load=not len(self.pipeline),
                                lineage=self.lineage)
        per_rank = ray.get(refs)
        return reduce_named(per_rank, weights=[m.get("num_tokens", 1.0) for m in per_rank]), handoff

    # -- metrics ----------------------------------------------------------------------------------
    def _fault_metrics(self, before: dict[str, int]) -> dict[str, float]:
        """Shards sent again this step, and since this process started."""
        out = {}
        for role, total in self.faults.items():
            out[f"faults/{role}_shards_resent"] = float(total - before[role])
            out[f"faults/{role}_shards_resent_total"] = float(total)
        return out

    def sample_table(self, rows, rollouts: RolloutBatch, rewards, scores: ScoreResult, count: int = 4):
        every = self.cfg.trainer.log_completions_every
        if not every or self.step % every:
            return []
        return sample_rows(rows, rollouts, rewards, scores, count)

    # -- held-out evaluation ------------------------------------------------------------------------
    def eval_due(self) -> bool:
        every = self.cfg.eval.every
        return bool(self.eval_rows) and (self.step == self.cfg.trainer.steps or (every > 0 and self.step % every == 0))

    def evaluate(self) -> dict[str, float]:
        """Greedy completions for the held-out prompts under the current weights, scored as the eval
        table; saved as ``eval/step-N.json``. Returns ``eval/<key>`` metrics and ``timing/eval``."""
        start = time.perf_counter()
        rows = self.eval_rows
        sampling = SamplingConfig(
            n=1, temperature=0.0, max_tokens=self.cfg.eval.max_tokens or self.cfg.rollout.max_completion_tokens,
        )
        prompts = [row["prompt"] for row in rows]
        texts = with_assistant_prefix(prompts, self._collect(self._submit_generation(prompts, sampling)).completion_texts)
        result = score_eval(rows, texts, self.eval_metrics, tag_style=self.cfg.data.tag_style)
        write_eval_json(self.output_dir / "eval" / f"step-{self.step}.json", self.step, result, rows, texts,
                        tag_style=self.cfg.data.tag_style)
        out = {f"eval/{k}": v for k, v in result.means.items()}
        self.last_eval = {**out, "eval/step": float(self.step)}
        out["timing/eval"] = time.perf_counter() - start
        return out

    # -- checkpoints ------------------------------------------------------------------------------
    def maybe_checkpoint(self) -> Optional[Path]:
        every, steps = self.cfg.trainer.save_every, self.cfg.trainer.steps
        if self.step == steps or (every and self.step % every == 0):
            return self.save_checkpoint()
        return None

    def save_checkpoint(self) -> Path:
        tmp = self.checkpoints.begin(self.step)
        ray.get([learner.save.remote(str(tmp), self.version) for learner in self.workers.learners])
        # rows drawn for generations still in flight are drawn again after a resume
        sampler = self.pipeline.oldest_sampler_state() or self.sampler.state_dict()
        write_json(tmp / "driver_state.json", {
            "step": self.step, "version": self.version, "sampler": sampler, "eval": self.last_eval,
        })
        (tmp / "config.yaml").write_text(self.cfg.to_yaml())
        return self.checkpoints.commit(self.step, tmp)

    # -- dry run ------------------------------------------------------------------------------------
    def dry_run(self, count: int = 8) -> dict[str, Any]:
        """One rollout + reward batch with the starting policy: samples, rewards, no update, no save."""
        rows = self.sample_prompts()
        start = time.perf_counter()
        rollouts = self.generate(rows, step=0)
        gen_seconds = time.perf_counter() - start
        scores = self.score(rows, rollouts)
        rewards = combined_rewards(scores)
        return {
            "samples": sample_rows(rows, rollouts, rewards, scores, count),
            "metrics": rollout_metrics(rollouts, rewards, scores, gen_seconds),
        }
