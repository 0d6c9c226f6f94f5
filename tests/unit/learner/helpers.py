"""A learner without DeepSpeed or a process group, for tests of its update on the built-in model.

``AccumulatingEngine`` stands in for DeepSpeed's engine as the learner uses it: it divides each loss by
its configured accumulation count and by the world size (DeepSpeed averages the ranks' gradients: a
lone simulated rank contributes its share) and adds gradients up until the accumulation boundary (the one set
with ``set_gradient_accumulation_boundary``, else every ``gas``-th micro-batch, as DeepSpeed counts),
where it records the summed gradient (what the optimizer would step on) and clears it.
"""

from __future__ import annotations

import torch

from grpo_ray.config import AlgoConfig, LearnerConfig
from grpo_ray.learner.policy import PolicyLearner, accumulation_steps
from grpo_ray.wire import TrainShard


def load_tiny_model():
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_model_path

    return AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:arithmetic-base"), dtype=torch.float32)


class Float32Engine:
    """What the learner asks a DeepSpeed engine in float32 about its dtype and its last step."""

    def bfloat16_enabled(self) -> bool:
        return False

    def fp16_enabled(self) -> bool:
        return False

    def was_step_applied(self) -> bool:  # DeepSpeed's own skip of a non-finite step is not simulated
        return True


class AccumulatingEngine(Float32Engine):
    def __init__(self, model: torch.nn.Module, gas: int, world_size: int = 1) -> None:
        self.module, self.gas, self.world_size = model, gas, world_size
        self.boundary: bool | None = None
        self.micro_steps = 0
        self.backward_at_boundary: list[bool] = []  # per backward: was it the boundary
        self.step_grads: list[dict[str, torch.Tensor]] = []  # per optimizer step: the summed gradient
        self.lr_scheduler = type("Schedule", (), {"get_last_lr": staticmethod(lambda: [0.0])})()
        model.zero_grad()

    def __call__(self, **kwargs):
        return self.module(**kwargs)

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.boundary = is_boundary

    def _at_boundary(self) -> bool:
        return self.boundary if self.boundary is not None else (self.micro_steps + 1) % self.gas == 0

    def backward(self, loss: torch.Tensor) -> None:
        (loss / (self.gas * self.world_size)).backward()
        self.backward_at_boundary.append(self._at_boundary())

    def zero_grad(self) -> None:
        self.module.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self._at_boundary():
            self.step_grads.append({n: p.grad.clone() for n, p in self.module.named_parameters() if p.grad is not None})
            self.module.zero_grad()
        self.micro_steps += 1

    def get_global_grad_norm(self) -> float:  # what ZeRO 1-3 report after their step
        return float(torch.stack([g.norm() for g in self.step_grads[-1].values()]).norm()) if self.step_grads else 0.0



def bare_learner(model, learner_cfg: LearnerConfig, algo_cfg: AlgoConfig, *, rows: int, world_size: int = 1,
                 share_prefix: bool = True, lora: bool = False) -> PolicyLearner:
    """A PolicyLearner for ``rows`` rows a step whose engine is an :class:`AccumulatingEngine`."""
    learner = PolicyLearner.__new__(PolicyLearner)  # no process group, no DeepSpeed
    learner.algo, learner.cfg = algo_cfg, learner_cfg
    learner.lora, learner.rank, learner.world_size = lora, 0, world_size
    learner.temperature, learner.max_completion_tokens = 0.9, 32
    learner.share_prefix, learner.device, learner.pad_id = share_prefix, torch.device("cpu"), 0
    learner.grad_accum, learner.steps_done, learner.reference = accumulation_steps(learner_cfg, rows), 0, None
    learner.rows_per_step, learner.boundary_by_hand = rows, bool(learner_cfg.max_tokens_per_micro_batch)
    learner.engine = AccumulatingEngine(model, learner.grad_accum, world_size)
    return learner


def uneven_shard(seed: int = 3) -> TrainShard:
    """8 rows: 2 prompts x 4 completions of lengths from 2 to 30, one row half out of the loss."""
    g = torch.Generator().manual_seed(seed)
    prompts = [p for p in (torch.randint(3, 400, (n,), generator=g).tolist() for n in (6, 9)) for _ in range(4)]
    completions = [torch.randint(3, 400, (n,), generator=g).tolist() for n in (12, 10, 3, 12, 30, 2, 7, 5)]
    masks = [[1] * len(c) for c in completions]
    masks[4][15:] = [0] * 15
    advantages = torch.randn(8, generator=g).tolist()
    return TrainShard(prompts, completions, advantages, masks, float(sum(map(sum, masks))), 8)
