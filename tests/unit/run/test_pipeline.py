"""The async pipeline's schedule: which steps' generations are submitted while a step updates."""

from __future__ import annotations

import pytest

from grpo_ray.run.pipeline import GenerationPipeline, InFlight

pytestmark = pytest.mark.unit


def schedule(depth: int, total: int) -> list[list[int]]:
    pipe, out = GenerationPipeline(depth), []
    for step in range(total):
        pipe.pop(step)
        ahead = pipe.steps_to_submit(step, total)
        for s in ahead:
            pipe.push(InFlight(s, [], None, {"cursor": s}))
        out.append(ahead)
    return out


def test_depth_k_keeps_k_generations_ahead_and_none_past_the_last_step() -> None:
    assert schedule(0, 4) == [[], [], [], []]
    assert schedule(1, 4) == [[1], [2], [3], []]
    assert schedule(2, 5) == [[1, 2], [3], [4], [], []]
    assert schedule(4, 6) == [[1, 2, 3, 4], [5], [], [], [], []]


def test_a_checkpoint_keeps_the_cursor_from_before_the_oldest_draw() -> None:
    pipe = GenerationPipeline(2)
    assert pipe.oldest_sampler_state() is None
    pipe.push(InFlight(3, [], None, {"cursor": 24}))
    pipe.push(InFlight(4, [], None, {"cursor": 32}))
    assert pipe.oldest_sampler_state() == {"cursor": 24}
    assert pipe.pop(4) is None and pipe.pop(3).step == 3 and len(pipe) == 1
