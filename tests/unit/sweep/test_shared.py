"""SlotBound: a shared learner's handle as one trial's LearnerGroup uses it, without Ray."""

from __future__ import annotations

import pickle

import pytest

from grpo_ray.sweep.shared import SlotBound

pytestmark = pytest.mark.unit


class Method:
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def remote(self, *args, **kwargs):
        self.calls.append((self.name, args, kwargs))
        return f"ref:{self.name}"

    def options(self, **options):
        self.calls.append(("options", (), options))
        return self


class FakeActor:
    def __init__(self) -> None:
        self.calls: list = []

    def __getattr__(self, name: str) -> Method:
        if name == "calls":
            raise AttributeError(name)
        return Method(name, self.calls)


def test_calls_that_touch_the_policy_name_the_slot_and_the_others_do_not() -> None:
    actor = FakeActor()
    bound = SlotBound(actor, "trial_1")
    bound.train_step.remote("shard")
    bound.send_weights.remote(3, True)
    bound.snapshot.remote()
    bound.save.options(name="x").remote("/ckpt", 2)
    bound.connect_sync.remote("topology")  # the transport is the learner's, not a slot's
    bound.rendezvous_address.remote()
    assert actor.calls == [
        ("train_step", ("shard",), {"slot": "trial_1"}), ("send_weights", (3, True), {"slot": "trial_1"}),
        ("snapshot", (), {"slot": "trial_1"}), ("options", (), {"name": "x"}), ("save", ("/ckpt", 2), {"slot": "trial_1"}),
        ("connect_sync", ("topology",), {}), ("rendezvous_address", (), {}),
    ]


def test_the_liveness_probe_asks_for_the_slot() -> None:
    actor = FakeActor()
    SlotBound(actor, "t").__ray_ready__.remote()
    assert actor.calls == [("check_slot", (), {"slot": "t"})]


def test_it_pickles_as_its_actor_and_slot() -> None:
    again = pickle.loads(pickle.dumps(SlotBound("handle", "t")))
    assert (again.actor, again.slot) == ("handle", "t")
