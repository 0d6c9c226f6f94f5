"""Several runs on one policy learner, one at a time: each run's trainable state in a slot of its own.

Trials of a LoRA sweep differ only in their adapters, optimizer states and a few settings, so one learner
can hold the frozen base model once and train every trial's adapter (``grpo_ray.sweep.shared``). A slot
is what a learner of the run alone would hold beyond the base: the adapter, the optimizer's moments, the
scheduler's position, the step count and the RNG, as :meth:`PolicyLearner.snapshot` writes them
(DeepSpeed's own checkpoint of the trainable state, for every ZeRO stage), kept as bytes in this
process, plus the run's settings (:class:`SlotSettings`).

Only the slot in use lives in the DeepSpeed engine. A call for another slot saves the one in use (unless
a snapshot taken since its last update already holds it) and restores the other, so each run's update
is the one it would make alone. A new slot starts from the state the learner had right after it was
built: a fresh adapter (the same one a lone learner built with the same seed starts from), an empty
optimizer, step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from grpo_ray.config import AlgoConfig, LearnerConfig, ModelConfig

# Settings the DeepSpeed engine or the model is built with: equal for every slot of a learner. The
# scheduler's shape (kind, warm-up, length) is fixed when the engine is made; its position is per slot.
ENGINE_LEARNER_FIELDS = ("lr_scheduler", "warmup_ratio", "max_grad_norm", "zero_stage", "num_learners",
                         "num_gpus_per_learner", "num_cpus_per_learner", "resources", "gradient_checkpointing")


@dataclass(frozen=True)
class SlotSettings:
    """A run's settings as its slot on a shared learner needs them."""

    model: ModelConfig
    learner: LearnerConfig
    algo: AlgoConfig
    total_steps: int
    rows_per_step: int  # over all ranks
    max_completion_tokens: int
    temperature: float


def engine_mismatch(base: SlotSettings, other: SlotSettings) -> Optional[str]:
    """Why ``other`` cannot share a learner built for ``base`` (one line), or None when it can."""
    if other.model != base.model:
        return "model differs (the base model and its LoRA shape are the learner's own)"
    if other.total_steps * other.algo.num_iterations != base.total_steps * base.algo.num_iterations:
        return "trainer.steps x algo.num_iterations differs (the schedule's length is the learner's own)"
    for name in ENGINE_LEARNER_FIELDS:
        if getattr(other.learner, name) != getattr(base.learner, name):
            return f"learner.{name} differs ({getattr(other.learner, name)!r} here, {getattr(base.learner, name)!r} on the learner)"
    return None


class LearnerSlots:
    """The slots of one :class:`~grpo_ray.learner.policy.PolicyLearner` rank, which is built with
    ``base``'s settings; every method that touches the policy first calls :meth:`use`."""

    def __init__(self, learner, base: SlotSettings) -> None:
        self.learner, self.base = learner, base
        self.initial = learner.snapshot()  # what a new slot starts from
        self.states: dict[str, dict[str, bytes]] = {}
        self.settings: dict[str, SlotSettings] = {}
        self.current: Optional[str] = None
        self.current_saved = False  # the states entry of the slot in use is what the engine holds
        self.switches = 0

    def open(self, slot: str, settings: SlotSettings) -> None:
        """A new run's slot (an open slot of that name starts over)."""
        problem = engine_mismatch(self.base, settings)
        if problem:
            raise ValueError(f"slot {slot}: cannot share this learner: {problem}")
        self.settings[slot], self.states[slot] = settings, self.initial
        if self.current == slot:
            self.current = None  # restored from the initial state on its next call

    def close(self, slot: str) -> None:
        self.settings.pop(slot, None)
        self.states.pop(slot, None)
        if self.current == slot:
            self.current = None

    def __contains__(self, slot: str) -> bool:
        return slot in self.settings

    def use(self, slot: str):
        """The learner, holding ``slot``'s state and settings."""
        if slot not in self.settings:
            raise KeyError(f"no slot {slot!r} on this learner (open: {', '.join(sorted(self.settings)) or 'none'})")
        if slot == self.current:
            return self.learner
        if self.current is not None and not self.current_saved:
            self.states[self.current] = self.learner.snapshot()
        self.learner.restore(self.states[slot])
        s = self.settings[slot]
        self.learner.configure(s.learner, s.algo, rows_per_step=s.rows_per_step // self.learner.world_size,
                               max_completion_tokens=s.max_completion_tokens, temperature=s.temperature)
        self.current, self.current_saved = slot, True
        self.switches += 1
        return self.learner

    def changed(self) -> None:
        """The slot in use was updated (its saved state is behind the engine's)."""
        self.current_saved = False

    def snapshot(self, slot: str) -> dict[str, bytes]:
        """``slot``'s state; taken from the engine when it is the slot in use (and kept as the slot's
        saved state, so that switching away from it need not save it again)."""
        if slot == self.current:
            if not self.current_saved:
                self.states[slot] = self.learner.snapshot()
                self.current_saved = True
            return self.states[slot]
        if slot not in self.states:
            raise KeyError(f"no slot {slot!r} on this learner")
        return self.states[slot]
