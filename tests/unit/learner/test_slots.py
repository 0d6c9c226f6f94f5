"""LearnerSlots: which state the one engine holds as several runs call it in turn.

The learner here is a fake that keeps its "trainable state" as a counter per run, so the test sees
which state each call found and what was saved; the real swap (DeepSpeed's checkpoint of the adapter
and optimizer) is tested through real learners in tests/integration/test_shared_learner.py.
"""

from __future__ import annotations

import pytest

from grpo_ray.config import AlgoConfig, LearnerConfig, ModelConfig
from grpo_ray.learner.slots import LearnerSlots, SlotSettings

pytestmark = pytest.mark.unit


class FakeLearner:
    world_size = 1

    def __init__(self) -> None:
        self.state = {"updates": 0, "owner": None}
        self.snapshots = self.restores = 0
        self.configured: list = []

    def snapshot(self) -> dict[str, bytes]:
        self.snapshots += 1
        return {"state": repr(self.state).encode()}

    def restore(self, files: dict[str, bytes]) -> None:
        self.restores += 1
        self.state = eval(files["state"].decode())  # noqa: S307 - our own repr of a dict of ints and strings

    def configure(self, learner_cfg, algo_cfg, **kw) -> None:
        self.configured.append((learner_cfg.lr, algo_cfg.beta, kw["rows_per_step"]))

    def update(self, owner: str) -> None:  # what a train step does to the state in the engine
        self.state = {"updates": self.state["updates"] + 1, "owner": owner}


def settings(lr: float = 1e-3, beta: float = 0.0, rows: int = 16, **learner) -> SlotSettings:
    return SlotSettings(ModelConfig(), LearnerConfig(lr=lr, **learner), AlgoConfig(beta=beta), 10, rows, 32, 1.0)


def step(slots: LearnerSlots, slot: str) -> dict:
    learner = slots.use(slot)
    learner.update(slot)
    slots.changed()
    return learner.state


def test_each_run_finds_its_own_state_and_settings_however_calls_interleave() -> None:
    learner = FakeLearner()
    slots = LearnerSlots(learner, settings())
    slots.open("a", settings(lr=1e-3, rows=16))
    slots.open("b", settings(lr=5e-4, beta=0.04, rows=32))
    assert step(slots, "a") == {"updates": 1, "owner": "a"}  # a fresh slot starts from the built state
    assert step(slots, "b") == {"updates": 1, "owner": "b"}  # not a's
    assert step(slots, "b") == {"updates": 2, "owner": "b"}  # no switch: no save, no restore
    assert step(slots, "a") == {"updates": 2, "owner": "a"}
    assert learner.configured == [(1e-3, 0.0, 16), (5e-4, 0.04, 32), (1e-3, 0.0, 16)]
    assert slots.switches == 3 and learner.restores == 3


def test_a_snapshot_of_the_slot_in_use_is_kept_so_leaving_it_saves_nothing() -> None:
    learner = FakeLearner()
    slots = LearnerSlots(learner, settings())
    slots.open("a", settings())
    slots.open("b", settings())
    step(slots, "a")
    taken = learner.snapshots
    state = slots.snapshot("a")  # what a run's driver keeps after each step
    assert learner.snapshots == taken + 1 and eval(state["state"].decode()) == {"updates": 1, "owner": "a"}
    step(slots, "b")
    assert learner.snapshots == taken + 1  # a's saved state was already current
    assert slots.snapshot("a") is state  # the slot not in use: its saved state, no engine work
    step(slots, "a")
    assert learner.state == {"updates": 2, "owner": "a"}


def test_reopening_a_slot_starts_it_over_and_a_closed_one_is_refused() -> None:
    learner = FakeLearner()
    slots = LearnerSlots(learner, settings())
    slots.open("a", settings())
    step(slots, "a")
    step(slots, "a")
    slots.open("a", settings())  # a trial restarted by Tune (PBT, a resume) starts from scratch
    assert step(slots, "a") == {"updates": 1, "owner": "a"}
    slots.close("a")
    assert "a" not in slots
    with pytest.raises(KeyError, match="no slot 'a'"):
        slots.use("a")


@pytest.mark.parametrize("other, words", [
    (SlotSettings(ModelConfig(name_or_path="builtin:smollm2-135m-instruct"), LearnerConfig(), AlgoConfig(), 10, 16, 32, 1.0),
     "model differs"),
    (settings(zero_stage=2), "learner.zero_stage differs"),
    (settings(lr_scheduler="cosine"), "learner.lr_scheduler differs"),
    (SlotSettings(ModelConfig(), LearnerConfig(), AlgoConfig(), 20, 16, 32, 1.0), "trainer.steps"),
])
def test_a_run_the_engine_was_not_built_for_is_refused(other, words) -> None:
    slots = LearnerSlots(FakeLearner(), settings())
    with pytest.raises(ValueError, match=words):
        slots.open("x", other)
