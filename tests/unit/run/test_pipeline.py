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
            pipe.push(InFlight(s, []))
        out.append(ahead)
    return out


def test_depth_k_keeps_k_generations_ahead_and_none_past_the_last_step() -> None:
    assert schedule(0, 4) == [[], [], [], []]
    assert schedule(1, 4) == [[1], [2], [3], []]
    assert schedule(2, 5) == [[1, 2], [3], [4], [], []]
    assert schedule(4, 6) == [[1, 2, 3, 4], [5], [], [], [], []]


def test_generations_are_queued_in_step_order() -> None:
    pipe = GenerationPipeline(2)
    pipe.push(InFlight(3, []))
    pipe.push(InFlight(4, []))
    with pytest.raises(ValueError, match="step 4 submitted after step 4"):
        pipe.push(InFlight(4, []))
    assert pipe.pop(4) is None and pipe.pop(3).step == 3 and len(pipe) == 1
