"""One-step-off asynchronous training against the synchronous loop, on one shared rollout actor (the
transformers engine: it starts in seconds, and the pipeline is the same for either engine).

With the lag bound at 0 the async mode is the synchronous loop: the same metrics, step for step.
With lag 1 each step's completions come from the adapter one update behind: the lag metric says so,
the prompts are the same as synchronous training draws, the rollout worker loads each new adapter at
the start of its next shard instead of while the driver waits, and the learner's sampler correction
sees a larger gap between the engine's logprobs and its own than it does synchronously.
"""

from __future__ import annotations

import json

import pytest

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import tiny_config

pytestmark = pytest.mark.integration

COMPARED = ["reward", "loss", "grad_norm", "kl", "completions/mean_length", "sampling/logp_difference/mean"]


@pytest.fixture(scope="module")
def cluster(tiny_hf):
    return tiny_hf


def run(cluster, tiny_model_dir, out, *overrides):
    cfg = tiny_config(tiny_model_dir, out, "trainer.steps=3", "trainer.log_completions_every=1", *overrides, engine="hf")
    trainer = GRPOTrainer(cfg).setup(workers=cluster)
    return trainer.train()


def prompts_by_step(out) -> list[list[str]]:
    rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    return [[r["prompt"] for r in rows if r["step"] == s] for s in (1, 2, 3)]


@pytest.fixture(scope="module")
def sync_run(cluster, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sync")
    return run(cluster, tiny_model_dir, out), out


def test_lag_bound_0_matches_synchronous_training(cluster, tiny_model_dir, tmp_path, sync_run):
    sync, _ = sync_run
    lag0 = run(cluster, tiny_model_dir, tmp_path, "trainer.async_rollout=true", "trainer.max_policy_lag=0")
    for a, b in zip(sync, lag0):
        for key in COMPARED:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)
    assert all(h["policy_version_lag"] == 0 for h in lag0)


def test_lag_1_overlaps_and_corrects_for_the_stale_sampler(cluster, tiny_model_dir, tmp_path, sync_run):
    sync, sync_out = sync_run
    lag1 = run(cluster, tiny_model_dir, tmp_path, "trainer.async_rollout=true", "trainer.max_policy_lag=1")
    assert [h["policy_version_lag"] for h in lag1] == [0.0, 1.0, 1.0]
    assert "timing/prefetch" in lag1[0] and "timing/prefetch" not in lag1[-1]  # nothing to prefetch after the last
    assert prompts_by_step(tmp_path) == prompts_by_step(sync_out)  # the same data order
    # Step 1's adapter is not loaded in step 1's sync phase: the rollout worker loads it as the first part
    # of step 3's generation, which runs during step 2's update. The last step's sync loads it at once.
    assert ["sync/load_seconds_max" in h for h in lag1] == [False, False, True]
    assert ["sync/load_seconds_in_generate_max" in h for h in lag1] == [False, False, True]
    assert all("sync/load_seconds_max" in h and "sync/load_seconds_in_generate_max" not in h for h in sync)
    for key in ["min", "mean", "max"]:
        assert f"sampling/importance_sampling_ratio/{key}" in lag1[1]
    # synchronous: the engine and the learner hold the same adapter, and their logprobs agree closely;
    # one update behind, they differ more
    assert max(h["sampling/logp_difference/mean"] for h in sync) < 0.01
    assert min(lag1[i]["sampling/logp_difference/mean"] for i in (1, 2)) > max(h["sampling/logp_difference/mean"] for h in sync)


def test_staleness_k_runs_k_generations_ahead(cluster, tiny_model_dir, tmp_path, sync_run):
    """Up to K generations run ahead of the update: the lag grows by one a step until it is K, never more,
    and the data order is the synchronous one."""
    sync, sync_out = sync_run
    steps, k = 5, 3
    out = tmp_path / "lagk"
    history = run(cluster, tiny_model_dir, out, "trainer.async_rollout=true", f"trainer.max_policy_lag={k}",
                  f"trainer.steps={steps}")
    assert [h["policy_version_lag"] for h in history] == [float(min(i, k)) for i in range(steps)]
    assert prompts_by_step(out)[:3] == prompts_by_step(sync_out)
