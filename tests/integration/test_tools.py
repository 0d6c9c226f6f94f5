"""Multi-turn rollouts with tools through the real engine, reward worker and learner, on the built-in
model: a user tool (in its tool process) answers calls and its turn's tokens are appended to the
trajectory, out of the loss.
The built-in model knows no tool format, so a stand-in parser decides which turns call
(toy_tool_parser.py); everything else is the real path. With tools on nothing else breaks: async
generation two steps ahead with dynamic sampling resumes exactly, and a rollout actor killed in the
middle of its episodes has them redone the same way."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import builtin_config

pytestmark = pytest.mark.integration

PARSER = f"{Path(__file__).with_name('toy_tool_parser.py')}:LengthCalls"
TOOL = f"{Path(__file__).with_name('toy_tools.py')}:double"  # a user tool: it runs in a tool process
# the built-in model knows its format prompt only (and has 512 tokens of context): no tools' description
TOOLS = ("rollout.kind=multi_turn", f"rollout.tools=['{TOOL}']", f"rollout.tool_parser={PARSER}", "rollout.max_turns=3",
         "rollout.max_tool_calls=2", "rollout.max_completion_tokens=96", "rollout.tools_prompt=''",
         "trainer.log_completions_every=1")


@pytest.fixture(scope="module")
def cluster(builtin_vllm):
    return builtin_vllm


class Interrupted(Exception):
    pass


def train(cluster, out, *overrides, stop_after=None, patch=None):
    """The run's step metrics (and its trainer); with ``stop_after``, cut off once that step is checkpointed."""
    history = []

    def hook(step, metrics, saved):
        history.append(metrics)
        if step == stop_after:
            raise Interrupted

    trainer = GRPOTrainer(builtin_config(out, *TOOLS, *overrides)).setup(workers=cluster)
    if patch is not None:
        patch(trainer)
    try:
        trainer.train(on_step=hook)
    except Interrupted:
        pass
    finally:
        trainer.workers.stop_learners()
    return history, trainer


def test_tools_with_async_dynamic_sampling_a_dead_rollout_actor_and_a_resume(cluster, tmp_path):
    """One whole run (4 steps, generation two steps ahead, dynamic sampling), and the same run cut off
    after its step-2 checkpoint with its rollout actor killed in the middle of step 2's episodes, then
    resumed: the cut run's steps equal the whole run's (the killed shard's episodes were redone the
    same way), and so do the resumed run's."""
    mode = ("trainer.async_rollout=true", "trainer.max_policy_lag=2", "algo.dynamic_sampling=true",
            "algo.dynamic_sampling_max_rounds=2", "trainer.steps=4")
    whole, _ = train(cluster, tmp_path / "whole", *mode)
    for h in whole:
        assert h["tools/call_rate"] > 0 and h["tools/tool_tokens_per_episode"] > 0
        assert h["tools/turns_per_episode"] > 1 and h["tools/error_rate"] == 0.0
        assert h["num_tokens"] < h["completions/mean_length"] * 16  # tool tokens are out of the loss
    assert [h["policy_version_lag"] for h in whole] == [0.0, 1.0, 2.0, 2.0]
    samples = [json.loads(line) for line in (tmp_path / "whole" / "completions.jsonl").read_text().splitlines()]
    called = [s["completion"] for s in samples if "\n[tool] " in s["completion"]]
    assert called, "the completion tables show whole transcripts, tool turns included"
    # the tool really ran: its result is twice the length of the turn that called it
    assert any(part.startswith("tool] ") and part[6:].strip().isdigit() for c in called for part in c.split("\n["))

    rollout = cluster.rollouts[0]
    pid = ray.get(rollout.__ray_call__.remote(lambda self: os.getpid()))

    def kill_with_episodes_queued(trainer):
        prefetch = trainer.rollout.prefetch

        def prefetch_then_kill(current, total, weights):
            steps = prefetch(current, total, weights)
            if current == 1:  # step 2: step 4's episodes were just handed to the actor
                os.kill(pid, signal.SIGKILL)
            return steps

        trainer.rollout.prefetch = prefetch_then_kill

    cut, trainer = train(cluster, tmp_path / "split", *mode, "trainer.save_every=2", stop_after=2,
                         patch=kill_with_episodes_queued)
    assert ray.get(rollout.__ray_call__.remote(lambda self: os.getpid())) != pid  # it died; Ray restarted it
    assert trainer.faults.total["rollout"] >= 1  # its episodes were sent again
    resumed, _ = train(cluster, tmp_path / "split", *mode, f"trainer.resume={tmp_path / 'split'}")
    keys = ["reward", "tools/calls_per_episode", "tools/tool_tokens_per_episode", "sampling/rounds", "policy_version_lag"]
    assert [[h[k] for k in keys] for h in cut + resumed] == [[h[k] for k in keys] for h in whole]
