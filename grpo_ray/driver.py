"""The single controller of a GRPO run.

It holds no model weights. It owns the step counter, the data cursor, the metric sinks and the
checkpoint schedule, and moves batches between the actors. One training step reads as its phases:

    sample prompts -> generate (rollout workers) -> score (reward workers) -> advantages (algo)
    -> update (learners) -> sync adapter (learner -> rollout workers) -> [evaluate] -> log -> checkpoint

Each phase's wall time is logged as ``timing/<phase>``. Held-out evaluation (greedy, on the
``eval.split`` prompts, through the same rollout workers and the synced adapter) runs before the first
step, every ``eval.every`` steps and after the last one; its table metrics are logged as ``eval/<key>``
and each result is kept as ``eval/step-N.json`` in the output dir.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import ray
import torch
from ray.exceptions import RayActorError

from grpo_ray.actors.recovery import PendingShards, run_shards
from grpo_ray.actors.sync import AdapterSync
from grpo_ray.algo import combine_rewards, compute_group_advantages, frac_reward_zero_std, reward_function_stats
from grpo_ray.algo import zero_std_group_mask
from grpo_ray.checkpoint import CheckpointManager, find_latest_checkpoint, read_json, write_json
from grpo_ray.cluster import Workers, async_core_contention, init_ray
from grpo_ray.config import GRPOConfig
from grpo_ray.data.from_config import load_split
from grpo_ray.data.prompts import assistant_prefix, question_of, with_assistant_prefix
from grpo_ray.errors import UserError
from grpo_ray.evaluation.records import write_eval_json
from grpo_ray.evaluation.table import metrics_for_rows, score_eval
from grpo_ray.learner.batch import contiguous_slices, split_into_shards
from grpo_ray.metrics import MetricLogger, PhaseTimer
from grpo_ray.models.paths import resolve_model_path
from grpo_ray.report import plot_report, read_metric_rows
from grpo_ray.rewards.scorer import ScoreResult, merge_score_results, split_for_workers
from grpo_ray.rollout.prompting import encode_prompts, per_prompt_seeds
from grpo_ray.rollout.types import GenerationRequest, RolloutBatch, SamplingConfig
from grpo_ray.sampler import PromptSampler

log = logging.getLogger("grpo_ray.driver")


@dataclass
class Prefetched:
    """The next step's prompts and their generation, submitted during this step's update."""

    rows: list
    pending: PendingShards
    submitted: float
    sampler_state: dict


class LearnerDied(RuntimeError):
    """A learner rank died: its optimizer state is gone, so the run stops (resume from a checkpoint)."""


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.trainer.output_dir)
        self.step = 0  # completed steps
        self.version = 0  # adapter version on the rollout workers: the number of updates applied
        self.workers: Optional[Workers] = None
        self.timer = PhaseTimer()
        self.prompts_skipped = 0  # prompts over data.max_prompt_tokens, skipped so far
        self.eval_rows: list[dict[str, Any]] = []
        self.eval_metrics: tuple = ()  # the table's rows for these held-out answers
        self.last_eval: dict[str, float] = {}  # eval/<key> of the newest evaluation (kept in checkpoints)
        self.faults = {"rollout": 0, "reward": 0}  # shards sent again after their actor died, this process
        self.prefetched: Optional[Prefetched] = None  # async_rollout: the next step's generation, in flight
        self.adapter_ref = None  # the object-store ref of adapter ``version``: every generation shard carries it

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
        self.dataset = load_split(cfg.data, seed=cfg.trainer.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name_or_path))
        self.sampler = PromptSampler(len(self.dataset), cfg.trainer.seed)
        if cfg.eval.enabled:
            self.eval_rows = self._load_eval_rows()
            self.eval_metrics = metrics_for_rows(self.eval_rows)
        self.checkpoints = CheckpointManager(self.output_dir)
        init_ray(cfg)
        contention = async_core_contention(cfg, os.cpu_count() or 1)
        if contention:
            log.warning(contention)
        if workers is None:
            self.workers = Workers.start(cfg, learners=learners, trial_group=trial_group)
        else:
            self.workers = workers
            workers.start_rewards(cfg)
            if learners:
                workers.start_learners(cfg)
        if learners:
            self._resume_or_start()
        return self

    def _resume_or_start(self) -> None:
        resume = self.cfg.trainer.resume
        ckpt = find_latest_checkpoint(resume) if resume else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"trainer.resume={resume!r}: no complete checkpoint there")
        if ckpt is not None:
            state = read_json(ckpt / "driver_state.json")
            ray.get([learner.load.remote(str(ckpt)) for learner in self.workers.learners])
            self.step, self.version = int(state["step"]), int(state["version"])
            self.sampler.load_state_dict(state["sampler"])
            self.last_eval = dict(state.get("eval", {}))
            log.info("resumed from %s at step %d", ckpt, self.step)
        else:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(self.cfg.to_yaml())
        # A fresh or restarted rollout worker holds no adapter: send the current one before any work.
        handoff = AdapterSync(self.workers.learners, self.workers.rollouts, self.version)
        handoff.wait()
        self.adapter_ref = handoff.ref

    def _load_eval_rows(self) -> list[dict[str, Any]]:
        cfg, e = self.cfg, self.cfg.eval
        limit = cfg.data.max_prompt_tokens
        if e.source is None and Path(cfg.data.source).expanduser().is_file():
            # one file has no splits: its "test" split would be the training rows themselves
            log.warning("eval: data.source %s is a single file with no held-out split; set eval.source to a "
                        "held-out file (or a folder of {train,test} files) to evaluate", cfg.data.source)
            return []
        data = cfg.data if e.source is None else cfg.data.model_copy(update={"source": e.source})
        try:
            rows = list(load_split(data, e.split, seed=cfg.trainer.seed, limit=e.limit))
        except (ValueError, KeyError, FileNotFoundError) as err:  # DataSourceError is a ValueError
            raise UserError(f"eval.split={e.split!r}: {err}; set eval.split or eval.source to held-out data, "
                            "or eval.enabled=false") from None
        fitting = [r for r, ids in zip(rows, encode_prompts(self.tokenizer, [r["prompt"] for r in rows])) if len(ids) <= limit]
        if len(fitting) < len(rows):
            log.warning("eval: %d of %d held-out prompts are over data.max_prompt_tokens=%d and are left out",
                        len(rows) - len(fitting), len(rows), limit)
        if not fitting:
            raise UserError(f"eval.split={e.split!r}: no held-out prompt fits data.max_prompt_tokens={limit}")
        return fitting

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
                before = self.evaluate()  # the starting policy (the adapter is still a no-op)
                logger.log(0, before)
                history.append({"step": 0, **before})
            while self.step < self.cfg.trainer.steps:
                metrics, samples = self.train_step()
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
        t = self.timer
        step_start = time.perf_counter()
        prefetched, self.prefetched = self.prefetched, None
        with t.phase("sample"):
            rows = prefetched.rows if prefetched else self.sample_prompts()
        with t.phase("generate"):  # async: only the wait for what was submitted during the last update
            gen_start = prefetched.submitted if prefetched else time.perf_counter()
            rollouts = self._collect(prefetched.pending) if prefetched else self.generate(rows)
            gen_seconds = time.perf_counter() - gen_start
        with t.phase("score"):
            scores = self.score(rows, rollouts)
        with t.phase("advantages"):
            advantages, rewards, in_loss = self.compute_advantages(scores, rollouts)
        if self._prefetch_due():
            with t.phase("prefetch"):  # step k+1's generation runs on the rollout workers during this update
                self.prefetched = self._prefetch_next()
        with t.phase("update"):  # the new adapter's hand-off is queued behind it on every actor
            learner_metrics, handoff = self.update(rollouts, advantages, in_loss)
        self.version += 1
        with t.phase("sync"):
            sync_metrics = self.sync(handoff)
        self.step += 1
        metrics = {
            # how many updates the sampling adapter was behind the learner when this batch was drawn
            "policy_version_lag": float(self.version - 1 - rollouts.policy_version),
            "policy_version": float(self.version),
            **self.rollout_metrics(rollouts, rewards, scores, gen_seconds),
            **learner_metrics,
            **sync_metrics,
            "faults/rollout_shards_resent": float(self.faults["rollout"]),
            "faults/reward_shards_resent": float(self.faults["reward"]),
            **t.pop(),
            "timing/step": time.perf_counter() - step_start,
        }
        return metrics, self.sample_table(rows, rollouts, rewards, scores)

    # -- phases ---------------------------------------------------------------------------------
    def sample_prompts(self) -> list[dict[str, Any]]:
        """``trainer.prompts_per_step`` rows, skipping prompts over ``data.max_prompt_tokens``."""
        rows, skipped, shortest, limit = [], 0, None, self.cfg.data.max_prompt_tokens
        while len(rows) < self.cfg.trainer.prompts_per_step:
            row = self.dataset[self.sampler.next_index()]
            length = len(encode_prompts(self.tokenizer, [row["prompt"]])[0])
            if length > limit:
                skipped += 1
                shortest = length if shortest is None else min(shortest, length)
                if skipped > len(self.dataset):
                    raise UserError(
                        f"data.max_prompt_tokens={limit}: every prompt is longer (the shortest has {shortest} "
                        f"tokens); raise data.max_prompt_tokens"
                    )
                continue
            rows.append(row)
        self.prompts_skipped += skipped
        return rows

    def sync(self, handoff: AdapterSync) -> dict[str, float]:
        """Wait for the adapter the update produced to be published and, unless the next step's
        generation is in flight (async: the rollout workers load it as the first part of their next
        shard, while the learner runs the next update), loaded by every rollout worker."""
        metrics, resent = handoff.wait()
        self.adapter_ref = handoff.ref
        self.faults["rollout"] += resent
        return metrics

    def _prefetch_due(self) -> bool:
        tr = self.cfg.trainer
        return tr.async_rollout and tr.max_policy_lag >= 1 and self.step + 1 < tr.steps

    def _prefetch_next(self) -> "Prefetched":
        """Draw step k+1's prompts and submit their generation under the current adapter."""
        sampler_state = self.sampler.state_dict()  # a checkpoint must not skip the drawn rows
        rows = self.sample_prompts()
        sampling = self.sampling(self.step + 1)
        return Prefetched(rows, self._submit_generation([r["prompt"] for r in rows], sampling), time.perf_counter(),
                          sampler_state)

    def sampling(self, step: int) -> SamplingConfig:
        r = self.cfg.rollout
        return SamplingConfig(
            n=r.group_size, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
            max_tokens=r.max_completion_tokens, seed=self.cfg.trainer.seed * 100_003 + step,
        )

    def generate(self, rows: list[dict[str, Any]], step: Optional[int] = None) -> RolloutBatch:
        sampling = self.sampling(self.step if step is None else step)
        return self._generate_sharded([row["prompt"] for row in rows], sampling)

    def _generate_sharded(self, prompts: list, sampling: SamplingConfig) -> RolloutBatch:
        """The prompts split over the rollout workers in contiguous slices, results joined in order."""
        return self._collect(self._submit_generation(prompts, sampling))

    def _submit_generation(self, prompts: list, sampling: SamplingConfig) -> PendingShards:
        seeds = per_prompt_seeds(sampling.seed, len(prompts))  # global indices: sharding changes nothing
        parts = contiguous_slices(len(prompts), len(self.workers.rollouts))
        busy = [(w, s) for w, s in zip(self.workers.rollouts, parts) if s.stop > s.start]
        adapter = self.adapter_ref  # the version this generation is sampled with, even if sent again later
        return PendingShards(
            "rollout", [w for w, _ in busy], [GenerationRequest(prompts[s], sampling, seeds[s]) for _, s in busy],
            lambda worker, request: worker.generate.remote(request, adapter),
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

    def compute_advantages(self, scores: ScoreResult, rollouts: RolloutBatch):
        """Rewards [N], advantages [N] and which rows enter the loss [N] (bool)."""
        a, g = self.cfg.algo, rollouts.group_size
        rewards = combine_rewards(torch.tensor(scores.rewards, dtype=torch.float32), scores.weights)
        advantages = compute_group_advantages(rewards, g, scale=a.scale_rewards)
        in_loss = torch.ones(len(rollouts), dtype=torch.bool)
        if a.mask_truncated_completions:
            in_loss &= ~torch.tensor(rollouts.is_truncated())
        if a.drop_zero_std_groups:
            in_loss &= zero_std_group_mask(rewards, g)
        return advantages, rewards, in_loss

    def update(self, rollouts: RolloutBatch, advantages: torch.Tensor,
               in_loss: torch.Tensor) -> tuple[dict[str, float], AdapterSync]:
        """Split the rows evenly over the learners; every rank steps its optimizer once per iteration.
        Returns the learners' metrics and the hand-off of the adapter this update makes, queued on the
        actors before the wait (a load only where no generation is in flight)."""
        shards = split_into_shards(
            rollouts.group_prompt_ids(), rollouts.completion_ids, advantages.tolist(), in_loss.tolist(),
            len(self.workers.learners), rollouts.sampling_logprobs,
        )
        refs = [learner.train_step.remote(shard) for learner, shard in zip(self.workers.learners, shards)]
        handoff = AdapterSync(self.workers.learners, self.workers.rollouts, self.version + 1, load=self.prefetched is None)
        try:
            per_rank = ray.get(refs)
        except RayActorError as err:  # optimizer state lives only there: no retry, resume from a checkpoint
            latest = self.checkpoints.latest()
            raise LearnerDied(
                f"a learner died during step {self.step + 1} ({str(err).splitlines()[0][:160]}); the last complete "
                f"checkpoint is {latest or 'none yet'}; continue with --resume {self.output_dir}"
            ) from None
        return {k: sum(m[k] for m in per_rank) / len(per_rank) for k in per_rank[0]}, handoff

    # -- metrics ----------------------------------------------------------------------------------
    def rollout_metrics(
        self, rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult, gen_seconds: float
    ) -> dict[str, float]:
        g = rollouts.group_size
        lengths = torch.tensor([len(c) for c in rollouts.completion_ids], dtype=torch.float32)
        grouped = rewards.view(-1, g)
        metrics = {
            "reward": float(torch.nanmean(rewards)),
            "reward_std": float(torch.nanmean(grouped.std(dim=1))),
            "frac_reward_zero_std": frac_reward_zero_std(rewards, g),
            **reward_function_stats(torch.tensor(scores.rewards, dtype=torch.float32), scores.names),
            "completions/mean_length": float(lengths.mean()),
            "completions/min_length": float(lengths.min()),
            "completions/max_length": float(lengths.max()),
            "completions/clipped_ratio": sum(rollouts.is_truncated()) / len(rollouts),
            "rollout/tokens_per_s": float(lengths.sum()) / max(gen_seconds, 1e-9),
        }
        if "load_adapter_s" in rollouts.stats:  # a worker loaded this batch's adapter as part of its shard
            metrics["sync/load_seconds_in_generate"] = rollouts.stats["load_adapter_s"]
        for name, count in scores.failures.items():
            metrics[f"rewards/{name}/failures"] = float(count)
        return metrics

    def sample_table(self, rows, rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult, count: int = 4):
        every = self.cfg.trainer.log_completions_every
        if not every or self.step % every:
            return []
        return self.samples(rows, rollouts, rewards, scores, count)

    @staticmethod
    def samples(rows, rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult, count: int):
        g = rollouts.group_size
        out = []
        for i in range(min(count, len(rollouts))):
            row = rows[i // g]
            entry = {
                "prompt": question_of(row["prompt"]),
                "completion": assistant_prefix(row["prompt"]) + rollouts.completion_texts[i],
                "answer": str(row.get("answer", "")), "reward": float(rewards[i]),
            }
            entry.update({f"rewards/{n}": scores.rewards[i][j] for j, n in enumerate(scores.names)})
            out.append(entry)
        return out

    # -- held-out evaluation ------------------------------------------------------------------------
    def eval_due(self) -> bool:
        every = self.cfg.eval.every
        return bool(self.eval_rows) and (self.step == self.cfg.trainer.steps or (every > 0 and self.step % every == 0))

    def evaluate(self) -> dict[str, float]:
        """Greedy completions for the held-out prompts under the current adapter, scored as the eval
        table; saved as ``eval/step-N.json``. Returns ``eval/<key>`` metrics and ``timing/eval``."""
        start = time.perf_counter()
        rows = self.eval_rows
        sampling = SamplingConfig(
            n=1, temperature=0.0, max_tokens=self.cfg.eval.max_tokens or self.cfg.rollout.max_completion_tokens,
        )
        prompts = [row["prompt"] for row in rows]
        texts = with_assistant_prefix(prompts, self._generate_sharded(prompts, sampling).completion_texts)
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
        # rows drawn for a generation still in flight are drawn again after a resume
        sampler = self.prefetched.sampler_state if self.prefetched else self.sampler.state_dict()
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
        rewards = combine_rewards(torch.tensor(scores.rewards, dtype=torch.float32), scores.weights)
        return {
            "samples": self.samples(rows, rollouts, rewards, scores, count),
            "metrics": self.rollout_metrics(rollouts, rewards, scores, gen_seconds),
        }
