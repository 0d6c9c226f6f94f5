"""The multi-turn kind on a scripted engine and the built-in tokenizer: a trajectory is the sampled
tokens with the tool turns' tokens between them, masked out of the loss; limits end episodes; the
conversation holds the calls and results; episodes advance independently; and the same request gives
the same trajectories again (what a resent shard relies on)."""

from __future__ import annotations

import threading
import time

import pytest

from grpo_ray.models.paths import resolve_model_path
from grpo_ray.rollout.engines.base import RolloutEngine
from grpo_ray.rollout.engines.turns import TurnOutput, drive_turns
from grpo_ray.rollout.kinds import KindSpec, create_rollout_kind
from grpo_ray.wire import GenerationRequest, SamplingConfig
from tests.unit.tools.sources import COUNTER_ENV

pytestmark = pytest.mark.unit

CALL = '<tool_call>\n{{"name": "calculator", "arguments": {{"expression": "{}"}}}}\n</tool_call>'


class ScriptedEngine(RolloutEngine):
    """Replies by a script keyed on the question and the turn: text, tokenized, with the end-of-turn
    token unless the script says the turn ran out of tokens. Logprobs are -0.5 a token."""

    def __init__(self, tokenizer, script) -> None:
        self.tokenizer, self.script, self.version = tokenizer, script, 3
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.prompts_seen: list[list[int]] = []

    @classmethod
    def from_spec(cls, spec):
        raise NotImplementedError

    def generate(self, request, progress=False):
        raise NotImplementedError

    def apply_lora(self, adapter):
        raise NotImplementedError

    def load_weights(self, buckets):
        raise NotImplementedError

    def sample_turn_batch(self, sampling, turns):
        out = []
        for turn in turns:
            self.prompts_seen.append(turn.prompt_ids)
            text = self.tokenizer.decode(turn.prompt_ids)
            question = text.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
            n_turn = text.count("<|im_start|>tool")  # tool turns so far
            reply, finish = self.script(question, n_turn, turn)
            ids = self.tokenizer.encode(reply, add_special_tokens=False)[: turn.max_tokens]
            if finish == "stop" and len(ids) < turn.max_tokens:
                ids.append(self.end)
            else:
                finish = "length"
            out.append(TurnOutput(turn.key, ids, [-0.5] * len(ids), finish))
        return out


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:arithmetic-base"))


def script(question, n_turn, turn):
    """'3 * 12?': a call, then the answer; 'loop?': calls forever; 'long?': runs out of tokens."""
    if question.startswith("loop"):
        return CALL.format("1 + 1"), "stop"
    if question.startswith("long"):
        return "word " * 400, "length"
    if n_turn == 0:
        return CALL.format(question.rstrip("?")), "stop"
    return "<reasoning>\nThe calculator says so.\n</reasoning>\n<answer>\n36\n</answer>", "stop"


def rollout(tokenizer, questions, *, n=2, max_tokens=200, **options):
    kind = create_rollout_kind(KindSpec("multi_turn", {"tools": ["calculator"], **options}))
    engine = ScriptedEngine(tokenizer, script)
    prompts = [[{"role": "user", "content": q}] for q in questions]
    try:
        return kind.rollout(engine, GenerationRequest(prompts, SamplingConfig(n=n, max_tokens=max_tokens, seed=7))), engine
    finally:
        kind.close()


def test_a_trajectory_is_the_sampled_tokens_with_the_tool_turn_between_them(tokenizer) -> None:
    batch, engine = rollout(tokenizer, ["3 * 12?"], n=2)
    assert batch.group_size == 2 and batch.policy_version == 3 and batch.finish_reasons == ["stop", "stop"]
    ids, mask, logprobs = batch.completion_ids[0], batch.loss_mask[0], batch.sampling_logprobs[0]
    assert len(ids) == len(mask) == len(logprobs)
    tool = [t for t, m in zip(ids, mask) if m == 0]
    assert tokenizer.decode(tool) == "\n<|im_start|>tool\n36<|im_end|>\n<|im_start|>assistant\n"
    assert all(lp == 0.0 for lp, m in zip(logprobs, mask) if m == 0)
    assert all(lp == -0.5 for lp, m in zip(logprobs, mask) if m == 1)
    # the second turn was asked for with exactly prompt + first turn + tool tokens: nothing re-rendered
    first_turn_end = mask.index(0)
    assert engine.prompts_seen[-1] == batch.prompt_ids[0] + ids[: first_turn_end + len(tool)]
    roles = [m["role"] for m in batch.conversations()[0]]
    assert roles == ["assistant", "tool", "assistant"]
    assert batch.conversations()[0][0]["tool_calls"][0]["function"] == {"name": "calculator",
                                                                          "arguments": {"expression": "3 * 12"}}
    assert batch.final_texts()[0].endswith("<answer>\n36\n</answer>")
    assert batch.episode_stats[0] == {"turns": 2, "tool_calls": 1, "tool_errors": 0, "tool_timeouts": 0,
                                      "malformed_tool_calls": 0, "model_tokens": sum(mask), "tool_tokens": len(tool),
                                      "limit_hit": 0}


def test_versions_recorded_per_token_follow_the_trajectory_through_its_tool_turns(tokenizer) -> None:
    """In-flight updates between two turns: the first reply was sampled by version 3, the second by 4;
    the tool tokens between them (not sampled) carry the version before them, and the batch's
    policy_version is the oldest, 3."""

    class Updating(ScriptedEngine):
        def sample_turn_batch(self, sampling, turns):
            out = [TurnOutput(o.key, o.token_ids, o.logprobs, o.finish_reason, [self.version] * len(o.token_ids))
                   for o in super().sample_turn_batch(sampling, turns)]
            self.version += 1  # a new version loaded before the next turns
            return out

    kind = create_rollout_kind(KindSpec("multi_turn", {"tools": ["calculator"]}))
    try:
        batch = kind.rollout(Updating(tokenizer, script), GenerationRequest([[{"role": "user", "content": "3 * 12?"}]],
                                                                            SamplingConfig(n=1, max_tokens=200, seed=7)))
    finally:
        kind.close()
    mask, versions = batch.loss_mask[0], batch.token_versions[0]
    first_reply = mask.index(0)
    second_reply = first_reply + mask[first_reply:].index(1)
    assert batch.policy_version == 3 and len(versions) == len(mask)
    assert versions == [3] * second_reply + [4] * (len(mask) - second_reply)
    assert rollout(tokenizer, ["3 * 12?"], n=1)[0].token_versions is None  # nothing recorded: one version


def test_limits_end_episodes_as_truncated(tokenizer) -> None:
    batch, _ = rollout(tokenizer, ["loop?", "long?"], n=1, max_turns=3, max_tokens=1000)
    assert batch.finish_reasons == ["length", "length"]
    looped, long = batch.episode_stats
    assert looped["turns"] == 3 and looped["tool_calls"] == 2 and looped["limit_hit"] == 1
    assert long["turns"] == 1 and len(batch.completion_ids[1]) == 1000
    # a budget too small for the tool's result and a reply: cut off before the tool tokens
    small, _ = rollout(tokenizer, ["3 * 12?"], n=1, max_tokens=40)
    assert small.finish_reasons == ["length"] and 0 not in small.loss_mask[0]


def test_the_same_request_gives_the_same_trajectories(tokenizer) -> None:
    a, _ = rollout(tokenizer, ["3 * 12?", "7 - 9?"])
    b, _ = rollout(tokenizer, ["3 * 12?", "7 - 9?"])
    assert a.completion_ids == b.completion_ids and a.conversations() == b.conversations()
    assert [m["content"] for m in a.conversations()[2] if m["role"] == "tool"] == ["-2"]


def test_episodes_do_not_wait_for_each_others_tools() -> None:
    """A slow tool holds its episode only: the other episode's turns go on being sampled meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    from grpo_ray.rollout.engines.turns import Turn

    pool, order, released = ThreadPoolExecutor(2), [], threading.Event()

    def sample(turns):
        order.extend((t.key, len(t.prompt_ids)) for t in turns)
        return [TurnOutput(t.key, [1], [0.0], "stop") for t in turns]

    def slow_tool(turn):
        released.wait(5)
        return Turn(turn.key, turn.prompt_ids + [1], 1)

    def on_done(out):
        if out.key == "slow" and len(order) == 1 + 1:  # its first turn: its tool blocks until released
            return pool.submit(slow_tool, Turn("slow", [0, 1], 1))
        if out.key == "fast" and sum(k == "fast" for k, _ in order) < 4:
            if sum(k == "fast" for k, _ in order) == 3:
                released.set()
            return Turn("fast", [0] * (sum(k == "fast" for k, _ in order) + 1), 1)
        return None

    start = time.perf_counter()
    drive_turns(sample, [Turn("slow", [0], 1), Turn("fast", [0], 1)], on_done)
    assert [k for k, _ in order] == ["slow", "fast", "fast", "fast", "fast", "slow"]
    assert time.perf_counter() - start < 4




def test_an_environment_starts_from_the_row_and_its_methods_are_the_tools(tokenizer, tmp_path) -> None:
    (tmp_path / "env.py").write_text(COUNTER_ENV)
    add = '<tool_call>\n{"name": "add", "arguments": {"n": 5}}\n</tool_call>'

    def env_script(question, n_turn, turn):
        return (add, "stop") if n_turn == 0 else ("<answer>done</answer>", "stop")

    kind = create_rollout_kind(KindSpec("multi_turn", {"environment": f"{tmp_path}/env.py:Counter"}))
    engine = ScriptedEngine(tokenizer, env_script)
    prompts = [[{"role": "user", "content": "Count."}], [{"role": "user", "content": "Count again."}]]
    request = GenerationRequest(prompts, SamplingConfig(n=2, max_tokens=200, seed=1), columns=[{"start": 10}, {"start": 0}])
    try:
        batch = kind.rollout(engine, request)
    finally:
        kind.close()
    assert "The count starts at 10." in tokenizer.decode(batch.prompt_ids[0])  # reset's observation joins the question
    results = [[m["content"] for m in c if m["role"] == "tool"] for c in batch.conversations()]
    assert results == [["15"], ["15"], ["5"], ["5"]]  # one instance per episode: each starts from its own row
