"""SlotBound: a shared learner's handle as one trial's LearnerGroup uses it; SlotCloser: Tune's callback
that gives an ended trial's slot back. Without Ray."""

from __future__ import annotations

import pickle

import pytest

from grpo_ray.sweep import shared
from grpo_ray.sweep.shared import SharedBase, SlotBound, SlotCloser

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


class Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def test_an_ended_or_failed_trial_gives_its_slot_back_and_only_its_own(monkeypatch) -> None:
    """A trial whose reward code raised (Tune: on_trial_error) or that ended frees its slot; the other
    trials' slots stay open."""
    learner = FakeActor()
    monkeypatch.setattr(shared, "_ACTIVE", SharedBase(rollouts=[], learner=learner))
    closer = SlotCloser()
    closer.on_trial_error(3, [], Trial("t_failed"))
    closer.on_trial_complete(4, [], Trial("t_done"))
    assert learner.calls == [("close_slot", ("t_failed",), {}), ("close_slot", ("t_done",), {})]


def test_a_resumed_sweeps_callback_closes_slots_on_the_new_shared_learner(monkeypatch) -> None:
    """Tune pickles its callbacks with the experiment: the copy a resumed sweep unpickles holds no handle
    of the interrupted run's actors, and asks for the running shared base."""
    closer = pickle.loads(pickle.dumps(SlotCloser()))
    monkeypatch.setattr(shared, "_ACTIVE", None)
    closer.on_trial_complete(1, [], Trial("t"))  # no shared base running: nothing to free, no error
    new_learner = FakeActor()
    monkeypatch.setattr(shared, "_ACTIVE", SharedBase(rollouts=[], learner=new_learner))
    closer.on_trial_error(2, [], Trial("t"))
    assert new_learner.calls == [("close_slot", ("t",), {})]
