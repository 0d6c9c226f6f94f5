"""The rollout-engine interface, its registry, and the one place where config becomes engine settings.

An engine samples completions for a :class:`~grpo_ray.wire.GenerationRequest` (a
:class:`~grpo_ray.wire.RolloutBatch` with token ids and sampling logprobs) and takes new policy weights
in one of two forms: a LoRA adapter (:meth:`RolloutEngine.apply_lora`) or all of them in buckets of
named tensors (:meth:`RolloutEngine.load_weights`). A rollout kind (``grpo_ray.rollout.kinds``) drives
it to make trajectories. It knows nothing of Ray: the rollout actor, ``grpo-ray eval`` / ``generate``
and the tests all hold engines the same way.

Adding an engine (SGLang, say) is one class implementing :class:`RolloutEngine` in this folder and one
line registering its import path in :data:`ENGINES`; ``rollout.engine`` then accepts its name once the
config's ``RolloutEngineName`` Literal lists it (``tests/unit/test_config_names.py`` keeps the two
equal). Engines are registered by import path so that choosing one never imports the others (vLLM
takes seconds to import).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional

from grpo_ray.utils.registry import Registry

if TYPE_CHECKING:
    from grpo_ray.config import GRPOConfig
    from grpo_ray.rollout.engines.turns import OnDone, Turn, TurnOutput
    from grpo_ray.wire import GenerationRequest, LoraAdapter, RolloutBatch, SamplingConfig


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine is built from. :func:`engine_spec` makes it from a run's config; eval,
    generate and serve make it from their flags.

    ``device``: "cuda" or "cpu"; None decides in the engine's process (CUDA when it sees a GPU).
    ``lora``: the PEFT LoraConfig dict the policy trains (None: full fine-tuning, weights come whole).
    ``lora_apply``: how a LoRA update is applied: "merge" into the served weights, or "lora" through
    the engine's LoRA kernels. ``quantization``: "nf4" serves the base model rounded through NF4 as the
    learner holds it (``model.load_in_4bit``). ``sleep_level``: how the engine frees its device memory
    while colocated learners update (:meth:`RolloutEngine.sleep`); 0: it never sleeps. ``weight_transfer``:
    the engine can join a trainer's weight-transfer group (``sync.strategy=vllm_transfer``)."""

    engine: str
    model_path: str
    dtype: str = "auto"
    max_model_len: int = 1024
    device: Optional[str] = None
    lora: Optional[dict[str, Any]] = None
    max_lora_rank: int = 16
    lora_apply: str = "merge"
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    cpu_kvcache_gb: float = 1.0
    quantization: Optional[str] = None
    seed: int = 0
    trust_remote_code: bool = False
    revision: Optional[str] = None
    sleep_level: int = 0
    weight_transfer: bool = False  # started ready to join a trainer's weight-transfer group (vllm_transfer)
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific keyword arguments, passed as is

    def with_device(self, device: str) -> "EngineSpec":
        return replace(self, device=device)


class RolloutEngine(ABC):
    """Generation under a versioned policy. ``version`` is -1 until weights arrive (the untouched base)."""

    version: int = -1
    tokenizer: Any
    # In-flight weight updates: while set, an engine that decodes step by step calls it between steps
    # (the rollout worker loads a newer version there, raising ``version``) and records, per token, the
    # version that sampled it (``RolloutBatch.token_versions``). Engines that sample whole batches at
    # once (transformers) never call it.
    between_steps: Optional[Any] = None

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: EngineSpec) -> "RolloutEngine":
        """Build the engine (load the model) from ``spec``."""

    @abstractmethod
    def generate(self, request: "GenerationRequest", progress: bool = False) -> "RolloutBatch":
        """G completions for each of the B prompts, with sampling logprobs (after temperature)."""

    @abstractmethod
    def apply_lora(self, adapter: "LoraAdapter") -> None:
        """Make ``adapter`` the policy every later generate samples from."""

    @abstractmethod
    def load_weights(self, buckets: Iterable[Mapping[str, Any]]) -> None:
        """Replace every weight of the policy in place, from ``{HF checkpoint name: tensor}`` buckets
        (consumed one at a time, so a caller may fetch each only when it is needed)."""

    def sample_turns(self, sampling: "SamplingConfig", turns: list["Turn"], on_done: "OnDone") -> float:
        """Multi-turn rollouts: sample ``turns`` (one reply each, seeded by the turn, under ``sampling``'s
        temperature, top-p and top-k) and every turn ``on_done`` asks for once one finishes, without an
        episode waiting for another's turn. Returns the seconds spent sampling. This default samples
        what is ready in batches (:func:`~grpo_ray.rollout.engines.turns.drive_turns`); an engine with
        continuous batching adds each turn the moment it is known."""
        from grpo_ray.rollout.engines.turns import drive_turns

        return drive_turns(lambda batch: self.sample_turn_batch(sampling, batch), turns, on_done)

    def sample_turn_batch(self, sampling: "SamplingConfig", turns: list["Turn"]) -> list["TurnOutput"]:
        """One reply per turn (see :meth:`sample_turns`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample turns, so it runs no multi-turn rollouts")

    def sleep(self, level: int) -> None:
        """Free the engine's device memory while colocated learners update on the same GPU: level 1 keeps
        the weights in host memory, level 2 discards them (the next weight load rewrites every one). The
        engine wakes by itself: its weights before new ones are applied (never the other way round, or
        the woken copy would overwrite them), the rest before it samples. This default holds on."""

    # -- a transfer straight into the engine's model (sync.strategy=vllm_transfer) -----------------
    weight_transfer_backend: Optional[str] = None  # the backend it was started with; None: it takes none

    def join_weight_transfer(self, init_info: dict[str, Any]) -> None:
        """Join the trainer's weight-transfer group (vLLM's ``init_weight_transfer_engine``)."""
        raise NotImplementedError(f"{type(self).__name__} takes no weight transfer")

    def receive_weight_transfer(self, update_info: dict[str, Any]) -> None:
        """Take in the version the trainer is sending now: the weights ``update_info`` names, in order."""
        raise NotImplementedError(f"{type(self).__name__} takes no weight transfer")

    def leave_weight_transfer(self) -> None:
        """Leave the group (the engine keeps serving)."""

    def info(self) -> dict[str, Any]:
        """What the engine did last, for tests and metrics (e.g. how a merge replaced weights)."""
        return {}

    def close(self) -> None:
        """Release the engine's devices and child processes."""


# name -> "module:Class", imported only when chosen
ENGINES: Registry[str] = Registry("rollout engine")
ENGINES.register("vllm")("grpo_ray.rollout.engines.vllm_engine:VLLMEngine")
ENGINES.register("hf")("grpo_ray.rollout.engines.hf_engine:HFEngine")


def engine_class(name: str) -> type[RolloutEngine]:
    module, _, attr = ENGINES.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)


def create_engine(spec: EngineSpec) -> RolloutEngine:
    return engine_class(spec.engine).from_spec(spec)


def engine_spec(cfg: "GRPOConfig", model_path: str) -> EngineSpec:
    """The rollout engine of a training run, from its config (the only place that maps one to the other)."""
    r, m = cfg.rollout, cfg.model
    lora = None
    if m.lora.enabled:
        from grpo_ray.models.adapter_io import peft_config_dict, peft_lora_config

        lora = peft_config_dict(peft_lora_config(m))
    return EngineSpec(
        engine=r.engine, model_path=model_path, dtype=m.dtype,
        max_model_len=r.max_model_len or (cfg.data.max_prompt_tokens + max(r.max_completion_tokens, cfg.eval.max_tokens or 0)),
        lora=lora, max_lora_rank=m.lora.r, lora_apply=r.lora_apply,
        gpu_memory_utilization=r.gpu_memory_utilization, tensor_parallel_size=r.tensor_parallel_size,
        cpu_kvcache_gb=r.cpu_kvcache_gb, quantization="nf4" if m.load_in_4bit else None,
        seed=cfg.trainer.seed, trust_remote_code=m.trust_remote_code, revision=m.revision,
        # colocated: level 2 under full fine-tuning, whose every sync rewrites all the weights; level 1 with
        # LoRA, whose merge or adapter needs the base weights kept
        sleep_level=(1 if m.lora.enabled else 2) if cfg.trainer.colocate else 0,
        weight_transfer=cfg.sync_strategy == "vllm_transfer",
    )
