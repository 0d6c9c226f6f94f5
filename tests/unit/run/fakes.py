"""Fake actors for unit tests of the trainer's coordination, with no Ray.

A :class:`FakeActor` wraps a plain object: ``actor.method.remote(*args)`` runs the call at once (so each
actor runs its calls in the order they were submitted, as Ray does) and returns a :class:`Ref` holding
its result or its error, which the test's :class:`FakeCalls` hands out. An actor can be made to die
during its next calls (:meth:`FakeActor.die_during`), after which it is "restarted" (answers again)
unless it is dead for good (:meth:`FakeActor.kill`).

The fake workers (rollout, reward, learner) are deterministic functions of what they are given, so a
test can tell whether a resent shard, a rewind or a resume produced what an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

from grpo_ray.errors import NonFiniteUpdate
from grpo_ray.rewards.scorer import ScoreResult
from grpo_ray.run.shards import Calls
from grpo_ray.wire import LoraAdapter, RolloutBatch


class Died(Exception):
    """The fake actor died while running the call."""


class Lost(Exception):
    """A fake object that can no longer be read."""


class Ref:
    def __init__(self, actor: "FakeActor", method: str, args: tuple, kwargs: dict) -> None:
        self.value, self.error = None, None
        try:
            self.value = actor._run(method, args, kwargs)
        except Exception as err:  # noqa: BLE001 - kept, and raised to every reader, as Ray does
            self.error = err

    def resolve(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Value:
    """A ref to a plain value (what ``ray.put`` would return)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def resolve(self) -> Any:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


class _Method:
    def __init__(self, actor: "FakeActor", name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args, **kwargs):
        returns = getattr(getattr(self.actor.obj, self.name), "num_returns", 1)
        ref = Ref(self.actor, self.name, args, kwargs)
        self.actor.submitted.append((self.name, args))
        self.actor.timeline.append((next(_CALLS), self.name))
        if returns == 1:
            return ref
        return tuple(_Part(ref, i) for i in range(returns))


class _Part:
    """One of several return values of a call."""

    def __init__(self, ref: Ref, index: int) -> None:
        self.ref, self.index = ref, index

    def resolve(self) -> Any:
        return self.ref.resolve()[self.index]


_CALLS = itertools.count()  # orders calls across actors (each runs the moment it is submitted)


def in_order(actors: list["FakeActor"]) -> list[tuple[str, str]]:
    """(actor name, method) of every call made to ``actors``, in the order they were made."""
    return [(actor, method) for _, actor, method in sorted((i, a.name, m) for a in actors for i, m in a.timeline)]


class FakeActor:
    def __init__(self, obj: Any, name: str = "actor") -> None:
        self.obj, self.name = obj, name
        self.alive = True
        self.submitted: list[tuple[str, tuple]] = []
        self.timeline: list[tuple[int, str]] = []
        self._deaths: dict[str, int] = {}

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def die_during(self, method: str, times: int = 1, *, for_good: bool = False) -> None:
        """The next ``times`` calls of ``method`` die; the actor is restarted after each, or, ``for_good``,
        stays dead (as an actor without restarts, a learner, does)."""
        self._deaths[method] = self._deaths.get(method, 0) + times
        self._for_good = for_good

    def kill(self) -> None:
        """Dead for good: every call dies and the actor never answers again."""
        self.alive = False

    def _run(self, method: str, args: tuple, kwargs: dict) -> Any:
        if not self.alive:
            raise Died(f"{self.name} is dead")
        if self._deaths.get(method):
            self._deaths[method] -= 1
            if getattr(self, "_for_good", False):
                self.alive = False
            elif hasattr(self.obj, "on_restart"):
                self.obj.on_restart()
            raise Died(f"{self.name} died during {method}")
        args = tuple(a.resolve() if isinstance(a, (Ref, Value, _Part)) else a for a in args)
        return getattr(self.obj, method)(*args, **kwargs)


class FakeCalls(Calls):
    died = (Died,)
    lost = (Died, Lost, TimeoutError)
    failed = (Died,)

    def __init__(self) -> None:
        self.slept = 0.0

    def get(self, ref, timeout=None):
        if isinstance(ref, (list, tuple)):
            return [self.get(r) for r in ref]
        return ref.resolve()

    def answers(self, actor, timeout_s):
        return actor.alive

    def sleep(self, seconds):
        self.slept += seconds


def put(value: Any) -> Value:
    return Value(value)


# ---------------------------------------------------------------------------------------------
# Deterministic fake workers
# ---------------------------------------------------------------------------------------------
def _digest(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)


class FakeRolloutWorker:
    """Completions that are a function of (prompt, seed, weights version): a resent or resumed shard
    gives exactly what the first one gave."""

    def __init__(self) -> None:
        self.holds = None  # (lineage, version)
        self.version = -1
        self.loads: list[int] = []

    def on_restart(self) -> None:
        self.holds, self.version = None, -1

    def receive_weights(self, handle, live=False) -> float:
        if handle.key != self.holds:
            update = handle.ref.resolve()
            self.version, self.holds = update.version, handle.key
            self.loads.append(update.version)
        return 0.0

    def connect_sync(self, topology, index, strategy=None) -> bool:
        self.strategy, self.topology = strategy, topology
        self.connects = getattr(self, "connects", 0) + 1
        return True

    def sync_connected(self) -> bool:
        return getattr(self, "connected", True)

    def sleep(self) -> bool:
        return True

    def offer_weights(self, handle) -> bool:
        self.offered = handle
        return True

    def generate(self, request) -> RolloutBatch:
        if request.weights is not None:
            self.receive_weights(request.weights)
        n = request.sampling.n
        comp_ids, texts = [], []
        for prompt, seed in zip(request.prompts, request.seeds):
            question = prompt[-1]["content"]
            for j in range(n):
                rng = random.Random(_digest(question, seed, j, self.version))
                ids = [rng.randrange(100) for _ in range(rng.randrange(1, 5))]
                comp_ids.append(ids)
                texts.append(" ".join(map(str, ids)))
        return RolloutBatch(
            prompt_ids=[[len(p)] for p in request.prompts], completion_ids=comp_ids, completion_texts=texts,
            sampling_logprobs=[[-1.0] * len(c) for c in comp_ids], finish_reasons=["stop"] * len(comp_ids),
            group_size=n, policy_version=self.version,
            stats={"generate_s": 0.5, "completion_tokens": float(sum(map(len, comp_ids)))},
        )


class FakeData:
    """``n`` rows "q0".."q{n-1}" (answer: the index) behind a real prompt sampler (the data cursor)."""

    def __init__(self, n: int = 40, seed: int = 0) -> None:
        from grpo_ray.data.sampler import PromptSampler

        self.rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(i)} for i in range(n)]
        self.sampler = PromptSampler(n, seed)

    def sample_prompts(self, count: int) -> list[dict[str, Any]]:
        return [self.rows[self.sampler.next_index()] for _ in range(count)]


class FakeRewardWorker:
    """Reward: 1 when the first number in the reply is even, else 0."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, prompts, completions, columns) -> ScoreResult:
        self.batches.append(len(completions))
        firsts = [int(re.search(r"\d+", c[-1]["content"]).group()) for c in completions]
        rewards = [[float(first % 2 == 0)] for first in firsts]
        return ScoreResult(rewards, ["even"], [1.0], {}, [], {}, ["even"])


class FakeLearner:
    """Its 'weights' are the list of batches it trained on: a learner that saw the same batches in the
    same order has the same weights, and its update's metrics say what it trained on."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size
        self.trained: list[list[list[int]]] = []

    @property
    def fingerprint(self) -> int:
        return _digest(self.trained)

    def connect_sync(self, topology) -> bool:
        self.topology = topology
        return True

    def rendezvous_address(self) -> tuple[str, int]:
        return f"node-of-rank{self.rank}", 29500

    def sync_plan(self) -> str:
        return f"plan-of-rank{self.rank}"

    def free_cached_memory(self) -> bool:
        return True

    def train_step(self, shard) -> dict[str, float]:
        if getattr(self, "refuse", None):  # a real learner's update whose loss went nan
            raise NonFiniteUpdate(self.refuse)
        self.trained.append(shard.completion_ids)
        return {"loss": float(len(self.trained)), "num_tokens": float(sum(map(len, shard.completion_ids))),
                "fingerprint": float(self.fingerprint % 1000)}

    def send_weights(self, version, live=False):
        if self.rank != 0:
            return None
        return LoraAdapter(version, {}, {"fingerprint": self.fingerprint})

    def snapshot(self):
        return {"seconds": 0.0, "bytes": 1.0}, {f"rank{self.rank}": json.dumps(self.trained).encode()}

    snapshot.num_returns = 2

    def restore(self, files) -> int:
        self.trained = json.loads(files[f"rank{self.rank}"])
        return len(self.trained)

    def save(self, directory: str, version: int) -> bool:
        Path(directory, f"learner{self.rank}.json").write_text(json.dumps({"trained": self.trained, "version": version}))
        return True

    def load(self, directory: str) -> int:
        self.trained = json.loads(Path(directory, f"learner{self.rank}.json").read_text())["trained"]
        return len(self.trained)


class FakeWorkers:
    """Stands in for :class:`grpo_ray.cluster.Workers`: the role lists, and a learner group that can be
    started again (each start makes new learners, as after a death)."""

    def __init__(self, rollouts: int = 2, rewards: int = 2, learners: int = 2) -> None:
        self.rollouts = [FakeActor(FakeRolloutWorker(), f"rollout{i}") for i in range(rollouts)]
        self.rewards = [FakeActor(FakeRewardWorker(), f"reward{i}") for i in range(rewards)]
        self.num_learners = learners
        self.learner_starts = 0
        self.learners: list[FakeActor] = []
        self.start_learners(None)
        self.placement = None

    def start_learners(self, cfg) -> list:
        self.learner_starts += 1
        self.learners = [FakeActor(FakeLearner(i, self.num_learners), f"learner{i}") for i in range(self.num_learners)]
        return self.learners

    def shutdown(self) -> None:
        pass
