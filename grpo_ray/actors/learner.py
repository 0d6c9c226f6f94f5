"""LearnerWorker: one data-parallel rank of the DeepSpeed policy learner, as a Ray actor.

Two-phase start: every rank is created first; rank 0 then names an address and a free port, and
all ranks join the process group together in ``setup`` (joining blocks until all have arrived).
"""

from __future__ import annotations

import socket
from typing import Any, Optional

import ray

from grpo_ray.config import GRPOConfig
from grpo_ray.learner.batch import TrainShard
from grpo_ray.learner.policy import PolicyLearner
from grpo_ray.rollout.adapters import AdapterPayload


@ray.remote
class LearnerWorker:
    def __init__(self, config: dict[str, Any], rank: int, world_size: int) -> None:
        self.cfg = GRPOConfig.model_validate(config)
        self.rank, self.world_size = rank, world_size
        self.learner: Optional[PolicyLearner] = None

    def rendezvous_address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int) -> bool:
        c = self.cfg
        self.learner = PolicyLearner(
            c.model, c.learner, c.algo,
            total_steps=c.trainer.steps,
            rows_per_step=c.rollout_batch_size // self.world_size,
            max_completion_tokens=c.rollout.max_completion_tokens,
            temperature=c.rollout.temperature,
            rank=self.rank, world_size=self.world_size,
            master_addr=master_addr, master_port=master_port, seed=c.trainer.seed,
        )
        return True

    def train_step(self, shard: TrainShard) -> dict[str, float]:
        return self.learner.train_step(shard)

    def adapter_payload(self, version: int) -> Optional[AdapterPayload]:
        payload = self.learner.adapter_payload(version)  # every rank joins a ZeRO-3 gather
        return payload if self.rank == 0 else None

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], reference: bool = False):
        return self.learner.score(prompt_ids, completion_ids, reference=reference)

    def save(self, directory: str, version: int) -> bool:
        self.learner.save(directory, version)
        return True

    def load(self, directory: str) -> int:
        self.learner.load(directory)
        return self.learner.steps_done
