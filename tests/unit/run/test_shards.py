"""Shards over a role's actors: a shard whose actor died is sent again and counted, results stay in shard
order, and a role whose actors are all gone stops with a clear error. Fake actors, no Ray."""

from __future__ import annotations

import pytest

from grpo_ray.run.shards import AllWorkersDead, FaultCounter, PendingShards, dead_actors, wait_until_alive
from tests.unit.run.fakes import Died, FakeActor, FakeCalls

pytestmark = pytest.mark.unit


class Doubler:
    def __init__(self) -> None:
        self.seen = []

    def work(self, x):
        self.seen.append(x)
        return 2 * x


def submit(worker, shard):
    return worker.work.remote(shard)


def test_a_shard_whose_actor_died_is_sent_again_to_it_after_its_restart() -> None:
    workers = [FakeActor(Doubler(), f"w{i}") for i in range(3)]
    workers[1].die_during("work")
    faults = FaultCounter()
    pending = PendingShards("rollout", workers, [1, 2, 3], submit, calls=FakeCalls(), faults=faults)
    assert pending.result() == [2, 4, 6]
    assert workers[1].obj.seen == [2]  # the resend ran on the restarted actor, once
    assert pending.resent == 1 and faults.step_metrics()["faults/rollout_shards_resent"] == 1.0
    assert faults.step_metrics()["faults/rollout_shards_resent"] == 0.0  # per step: reset once reported


def test_a_shard_whose_actor_is_gone_for_good_goes_to_the_next_live_one() -> None:
    workers = [FakeActor(Doubler(), f"w{i}") for i in range(2)]
    workers[0].kill()
    calls = FakeCalls()
    pending = PendingShards("reward", workers, [5, 7], submit, calls=calls, restart_timeout_s=0.01)
    assert pending.result() == [10, 14]
    assert workers[1].obj.seen == [7, 5]


def test_every_actor_gone_is_one_clear_error() -> None:
    workers = [FakeActor(Doubler(), f"w{i}") for i in range(2)]
    for w in workers:
        w.kill()
    with pytest.raises(AllWorkersDead, match="every reward worker is dead"):
        PendingShards("reward", workers, [1], submit, calls=FakeCalls(), restart_timeout_s=0.01).result()


def test_a_shard_that_keeps_killing_its_actor_is_given_up_after_max_attempts() -> None:
    worker = FakeActor(Doubler())
    worker.die_during("work", times=10)
    with pytest.raises(Died):
        PendingShards("rollout", [worker], [1], submit, calls=FakeCalls(), max_attempts=3).result()


def test_more_shards_than_workers_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="3 rollout shards for 2 workers"):
        PendingShards("rollout", [FakeActor(Doubler())] * 2, [1, 2, 3], submit, calls=FakeCalls())


def test_the_liveness_probe() -> None:
    a, b = FakeActor(Doubler()), FakeActor(Doubler())
    b.kill()
    calls = FakeCalls()
    assert dead_actors([a, b], calls) == [1]
    assert wait_until_alive(a, 1.0, calls) and not wait_until_alive(b, 0.01, calls)
