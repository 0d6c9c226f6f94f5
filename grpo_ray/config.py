"""Validated configuration: one pydantic model per component, plus the root ``GRPOConfig``.

Loaded from YAML with dotted ``key=value`` overrides, validated once before any actor starts, and
never mutated afterwards (every model is frozen). Each field's ``description`` is written once here
and is what ``grpo-ray config fields`` prints. Unknown keys and broken cross-field rules become a
:class:`ConfigError` whose message is one line per problem, naming the field, the value and the fix.

This module imports only pydantic, yaml and the light ``grpo_ray.rewards`` registry: the algorithm
variant names below are ``Literal`` types kept equal to ``grpo_ray.algo``'s registries by a unit
test, so validating a config does not import torch.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
# The loss types whose loss is local to a micro-batch (grpo_ray.algo.LOSS_AGGREGATIONS' split_invariant=False,
# kept equal by tests/unit/test_config_names.py): they cannot be packed to a token budget.
SPLIT_DEPENDENT_LOSS_TYPES = ("bnpo",)
AdvantageScale = Literal["group", "batch", "none"]
AdvantageEstimator = Literal["grpo", "rloo", "reinforce_pp_baseline"]
PolicyObjective = Literal["clip", "cispo", "sapo"]
KLEstimator = Literal["k1", "k2", "k3"]
ImportanceSamplingLevel = Literal["token", "sequence"]
# The scale_rewards each advantage estimator takes, its default first (grpo_ray.algo.ADVANTAGE_ESTIMATORS'
# ``scales``): rloo and reinforce_pp_baseline scale themselves, so a std scale on top means nothing.
ESTIMATOR_SCALES: dict[str, tuple[str, ...]] = {
    "grpo": ("group", "batch", "none"), "rloo": ("none",), "reinforce_pp_baseline": ("none",),
}
MetricSink = Literal["console", "jsonl", "tensorboard", "wandb", "mlflow"]
# Kept equal to their registries by tests/unit/test_config_names.py (the registries import more than
# validating a config should).
RolloutEngineName = Literal["vllm", "hf"]  # grpo_ray.rollout.engines.ENGINES
RolloutKindName = Literal["single_turn", "multi_turn"]  # grpo_ray.rollout.kinds.ROLLOUT_KINDS
SyncStrategy = Literal["auto", "lora", "full", "broadcast", "vllm_transfer"]  # "auto" + grpo_ray.sync.WEIGHT_SYNCS
RewardIsolation = Literal["auto", "process", "thread"]  # grpo_ray.rewards.scorer.ISOLATIONS


class ConfigError(ValueError):
    """A user mistake in the config: ``str()`` is one line per problem, ready to print."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class LoraConfig(_Section):
    enabled: bool = Field(
        True, description="Train a LoRA adapter (synced to the rollout engines as the adapter alone); false trains "
        "every weight (full fine-tuning: full-weight sync, a frozen reference copy only when algo.beta > 0).",
    )
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Union[list[str], Literal["all-linear"]] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names to adapt (PEFT's target_modules), or 'all-linear'.",
    )


class ModelConfig(_Section):
    name_or_path: str = Field(
        "builtin:arithmetic-base",
        description="Hub id (e.g. meta-llama/Llama-3.1-8B-Instruct), a local folder, or a builtin: model.",
    )
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit) to load.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; 'auto' is bfloat16 on GPUs and float32 on CPU."
    )
    load_in_4bit: bool = Field(False, description="Load the base model in NF4 4-bit (QLoRA; needs a GPU and bitsandbytes).")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the hub.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="The LoRA adapter that GRPO trains.")


class ToolCallDemoConfig(_Section):
    name: str = Field(min_length=1, description="The tool called.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments.")
    result: str = Field(description="What it answered.")


class DemonstrationConfig(_Section):
    question: str = Field(min_length=1, description="The demonstration's user turn.")
    answer: str = Field(min_length=1, description="The assistant's reply to it, in the format the rewards ask for.")
    tool_calls: list[ToolCallDemoConfig] = Field(
        default_factory=list, description="Tool calls made before the reply: each an assistant turn calling the tool "
        "(Hermes format) and the tool's result as a tool turn (for rollout.kind=multi_turn recipes).",
    )

    def as_tuple(self) -> tuple:
        """(question, reply[, ((tool, arguments, result), ...)]), as prompt recipes take it."""
        if not self.tool_calls:
            return (self.question, self.answer)
        return (self.question, self.answer, tuple((c.name, dict(c.arguments), c.result) for c in self.tool_calls))


class DataConfig(_Section):
    source: str = Field(
        "arithmetic",
        description="A built-in dataset (arithmetic, gsm8k, pubmedqa, medical-o1), a hub id, or a local "
        "CSV/JSONL/Parquet file or folder.",
    )
    data_dir: Optional[str] = Field(
        None, description="A local copy of a built-in dataset (its folder or file), used instead of the hub."
    )
    subset: Optional[str] = Field(None, description="Hub config name or built-in subset (e.g. 'main', 'one_step').")
    split: str = Field("train", description="Split to train on.")
    question_column: Optional[str] = Field(None, description="Column holding the question (default: the loader's).")
    answer_column: Optional[str] = Field(None, description="Column holding the gold answer (default: the loader's).")
    system_prompt: Optional[str] = Field(None, description="System prompt; null uses the tag style's default.")
    tag_style: Literal["reasoning", "thinking"] = Field(
        "reasoning", description="Tags the model must use: <reasoning>/<answer> or <thinking>/<answer>."
    )
    demonstrations: list[DemonstrationConfig] = Field(
        default_factory=list,
        description="Worked examples put before every question as earlier user/assistant turns (few-shot in chat form).",
    )
    assistant_prefix: str = Field(
        "", description="Text every reply starts with, prefilled: the model continues it (TRL's continue_final_message), "
        "and rewards and eval score prefix + completion. E.g. '<reasoning>\\n' for a model that ignores the format.",
    )
    max_prompt_tokens: int = Field(256, ge=8, description="Prompts longer than this (in tokens) are dropped.")
    limit: Optional[int] = Field(None, ge=1, description="Use only the first N rows (after shuffling with trainer.seed).")


class RolloutConfig(_Section):
    engine: RolloutEngineName = Field("vllm", description="Generation engine: vLLM, or transformers generate as a fallback.")
    kind: RolloutKindName = Field(
        "single_turn", description="How a prompt becomes a trajectory: single_turn samples one reply; multi_turn lets "
        "the model call rollout.tools (or rollout.environment's methods) over several turns.",
    )
    tools: list[str] = Field(
        default_factory=list, description="multi_turn: the tools the model may call: built-ins (calculator, python), "
        "'module:function' or 'path/to/file.py:function' (a function with type hints and a docstring).",
    )
    environment: Optional[str] = Field(
        None, description="multi_turn: a class ('path/to/file.py:Class'), one instance per episode: reset(**row) starts "
        "it (a returned string is added to the question) and its public methods are tools.",
    )
    max_turns: int = Field(4, ge=1, description="multi_turn: most assistant turns in an episode.")
    max_tool_calls: int = Field(4, ge=1, description="multi_turn: most tool calls in an episode.")
    tool_timeout_s: float = Field(10.0, gt=0, description="multi_turn: a tool call slower than this is stopped "
                                  "(its process killed) and answers with an error.")
    tool_output_max_chars: int = Field(1000, ge=16, description="multi_turn: tool results are cut to this many characters.")
    tool_parser: str = Field(
        "auto", description="multi_turn: vLLM's tool-call parser for the model's format (hermes, llama3_json, ...), or "
        "a subclass of vLLM's ToolParser as 'path/to/file.py:Class'; auto: llama3_json for Llama-3 templates, else hermes.",
    )
    tool_processes: int = Field(2, ge=1, description="multi_turn: processes per rollout worker that run user tools "
                                "and environments.")
    tools_prompt: Optional[str] = Field(
        None, description="multi_turn, for a chat template with no tools of its own: what is added to the system "
        "message to describe the tools ({tools}: their JSON schemas, one a line); null: the Hermes format's "
        "description (grpo_ray.rollout.tool_calls.HERMES_INSTRUCTIONS); '': nothing (demonstrations teach it).",
    )
    group_size: int = Field(8, description="G: completions sampled per prompt.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int = Field(-1, description="Top-k sampling; -1 disables it.")
    max_completion_tokens: int = Field(256, ge=1, description="Longest completion, in tokens.")
    num_workers: int = Field(1, ge=1, description="Rollout actors; the prompts of a step are shared among them.")
    num_gpus_per_worker: Optional[float] = Field(
        None, ge=0, description="GPUs per rollout actor; null: rollout.tensor_parallel_size GPUs when the cluster has "
        "GPUs, else 0 (CPU).",
    )
    num_cpus_per_worker: float = Field(1.0, ge=0, description="CPUs per rollout actor.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism inside one rollout actor.")
    gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="Fraction of GPU memory vLLM may take (GPUs only; on CPU the KV cache is "
        "rollout.cpu_kvcache_gb)."
    )
    cpu_kvcache_gb: float = Field(1.0, gt=0, description="KV-cache size in GiB when vLLM runs on CPU.")
    max_model_len: Optional[int] = Field(
        None, ge=16, description="The engine's longest prompt + completion (null: data.max_prompt_tokens + the longest "
        "completion of training or evaluation).",
    )
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources each rollout actor needs, e.g. {node_a: 1} to place it on nodes started with --resources '{\"node_a\": 8}'.")
    lora_apply: Literal["merge", "lora"] = Field(
        "merge",
        description="How vLLM applies the synced LoRA adapter: merge it into the served weights on the rollout node "
        "(bare-model speed), or serve it through vLLM's LoRA kernels.",
    )
    inflight_weight_updates: bool = Field(
        False, description="With trainer.async_rollout: a new weights version goes into the engines between decoding "
        "steps of the generations already running, instead of waiting for them to finish; their requests keep their "
        "KV cache, later tokens are sampled by the new weights, and each token's version is recorded "
        "(rollout/token_lag_mean). A batch still lags the learner by at most trainer.max_policy_lag. Runs then "
        "depend on timing, so they do not repeat exactly.",
    )


class RewardFunctionConfig(_Section):
    name: str = Field(description="A registered reward, 'package.module:function' or 'path/file.py:function'.")
    weight: float = Field(1.0, description="Weight of this reward in the sum that advantages are computed from.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments passed to the function.")


def _default_rewards() -> list[RewardFunctionConfig]:
    names = ["correctness", "integer", "strict_format", "soft_format", "xml_count"]
    return [RewardFunctionConfig(name=n) for n in names]


class JudgeConfig(_Section):
    model: str = Field(
        "builtin:smollm2-135m-instruct",
        description="The judge's causal LM: a hub id, a local folder or a builtin: model; it answers yes or no.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Judge weight dtype; 'auto' is bfloat16 on GPUs and float32 on CPU."
    )
    batch_size: int = Field(16, ge=1, description="Completions per judge forward pass.")
    max_tokens: int = Field(1024, ge=16, description="Longest judge prompt in tokens; longer ones lose their start.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs of the judge actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs of the judge actor (0 on CPU machines).")
    max_restarts: int = Field(3, ge=0, description="Times Ray restarts a judge actor that died (its model loads again).")


class RewardConfig(_Section):
    functions: list[RewardFunctionConfig] = Field(
        default_factory=_default_rewards, min_length=1, description="Reward functions, summed with their weights."
    )
    timeout_s: float = Field(30.0, gt=0, description="A reward function slower than this on a batch counts as not applicable.")
    isolation: RewardIsolation = Field(
        "auto", description="Where reward functions run. 'process': each in a long-lived process of its own, killed "
        "and replaced when it misses reward.timeout_s, so a hung or busy-looping function really stops (costs a pickle "
        "of the batch per function). 'thread': on threads of the reward actor (cheapest; a timed-out function runs on "
        "and keeps its core). 'auto': built-ins known to be pure and fast on threads, user code (module:function, "
        "file.py:function) and model-based built-ins in processes.",
    )
    warmup_timeout_s: float = Field(
        600.0, gt=0, description="Longest a reward function's warmup() (e.g. a model load) may take in each process "
        "that runs it; it runs before the first batch, outside reward.timeout_s.",
    )
    num_workers: int = Field(1, ge=1, description="Reward actors; the completions of a step are shared among them.")
    num_cpus_per_worker: float = Field(0.5, ge=0, description="CPUs per reward actor.")
    num_gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per reward actor, for model-based reward functions that run in it (0 on CPU machines).")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources each reward actor needs, e.g. {node_a: 1} to place it on nodes started with --resources '{\"node_a\": 8}'.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The LM judge actor, started when reward.functions names lm_judge.")


class AlgoConfig(_Section):
    loss_type: LossType = Field("dapo", description="Loss aggregation: grpo, bnpo, dr_grpo or dapo (TRL's names).")
    beta: float = Field(0.04, ge=0, description="KL penalty weight; 0 skips the reference model entirely.")
    kl_estimator: KLEstimator = Field("k3", description="KL estimator (Schulman's k1, k2, k3).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Lower clip range: ratios below 1 - epsilon are clipped.")
    epsilon_high: Optional[float] = Field(None, gt=0, description="Upper clip range (DAPO's clip-higher); null means epsilon.")
    scale_rewards: AdvantageScale = Field(
        "group", description="Divide advantages by the group std, the batch std, or not at all (advantage_estimator=grpo; "
        "the others take only none)."
    )
    advantage_estimator: AdvantageEstimator = Field(
        "grpo", description="Advantages from each group's rewards: grpo (group-mean baseline, then scale_rewards), rloo "
        "(leave-one-out baseline; RLOO, Ahmadian et al. 2024) or reinforce_pp_baseline (group-mean baseline, then "
        "whitened over the batch's completion tokens; REINFORCE++, Hu 2025).",
    )
    policy_objective: PolicyObjective = Field(
        "clip", description="Per-token objective: clip (PPO's clipped ratio), cispo (a capped, detached importance weight "
        "times the log-prob, so clipped tokens keep their gradient; MiniMax-M1) or sapo (a sigmoid gate instead of the "
        "clip; SAPO). TRL's loss_type=cispo is cispo with loss_type=dapo, its sapo is sapo with loss_type=grpo.",
    )
    delta: Optional[float] = Field(
        None, gt=1, description="Two-sided clipping (INTELLECT-2, TRL's delta), policy_objective=clip: cap the unclipped "
        "ratio at delta, bounding the loss of negative-advantage tokens whose ratio ran away; null: off.",
    )
    cispo_max_ratio: float = Field(
        5.0, ge=1, description="policy_objective=cispo: cap on the importance weight (ScaleRL's eps_max; what TRL's "
        "epsilon_high means under loss_type=cispo).",
    )
    sapo_temperature_pos: float = Field(1.0, gt=0, description="policy_objective=sapo: gate temperature for tokens with positive advantage.")
    sapo_temperature_neg: float = Field(1.05, gt=0, description="policy_objective=sapo: gate temperature for tokens with advantage <= 0.")
    num_iterations: int = Field(1, ge=1, description="Policy updates per generated batch (PPO epochs, TRL's mu).")
    importance_sampling_level: ImportanceSamplingLevel = Field(
        "token", description="Importance ratio per token (GRPO) or per sequence (GSPO)."
    )
    sampler_correction: bool = Field(
        True, description="Weight each token's policy loss by min(pi_old / pi_sampler, sampler_correction_cap): truncated "
        "importance sampling for the gap between the rollout engine and the learner (TRL's vllm_importance_sampling_correction).",
    )
    sampler_correction_cap: float = Field(3.0, gt=0, description="Truncation of the sampler-correction weight.")
    mask_truncated_completions: bool = Field(False, description="Exclude completions cut at max_completion_tokens from the loss.")
    drop_zero_std_groups: bool = Field(False, description="Drop groups whose rewards are all equal (they carry no signal).")
    dynamic_sampling: bool = Field(
        False, description="DAPO's dynamic sampling: keep only groups whose rewards differ and draw more prompts until "
        "the step has trainer.prompts_per_step of them (at most dynamic_sampling_max_rounds extra generations).",
    )
    dynamic_sampling_max_rounds: int = Field(
        3, ge=1, description="Extra generation rounds a step may draw for dynamic sampling; groups with no reward "
        "spread fill whatever is still missing, outside the loss.",
    )

    @property
    def resolved_epsilon_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


class LearnerConfig(_Section):
    lr: float = Field(1e-5, ge=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("constant", description="Learning-rate schedule after warm-up.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of trainer.steps spent warming up linearly.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    micro_batch_size: int = Field(
        8, ge=1, description="Sequences per forward/backward on one learner (unused with max_tokens_per_micro_batch).",
    )
    max_tokens_per_micro_batch: int | None = Field(
        None, ge=0, description="Token budget of a forward/backward instead of micro_batch_size: each learner packs "
        "its rows, longest first, into micro-batches of at most this many padded tokens (rows x longest prompt + "
        "completion), so long completions get fewer rows and short ones more; 0 or null: off. Needs a loss_type "
        "that sums exactly over micro-batches (not bnpo).",
    )
    logprob_chunk_size: int = Field(
        1024, ge=0, description="Completion positions per application of the LM head when computing logprobs and "
        "entropy: the float32 logits of one chunk exist at a time (recomputed in backward), not [rows, T, vocab]; "
        "same values and gradients. 0: the whole completion at once.",
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage.")
    num_learners: int = Field(1, ge=1, description="Data-parallel learner actors (one DeepSpeed group).")
    num_gpus_per_learner: Optional[float] = Field(
        None, ge=0, description="GPUs per learner actor; null: 1 when the cluster has GPUs, else 0 (CPU).",
    )
    num_cpus_per_learner: float = Field(1.0, ge=0, description="CPUs per learner actor.")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources each learner actor needs, e.g. {node_a: 1} to place it on nodes started with --resources '{\"node_a\": 8}'.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    snapshot_state: Optional[bool] = Field(
        None, description="After every step, keep a copy of each learner rank's trainable state (weights, optimizer, "
        "scheduler, RNG) in the object store, so a dead learner is replaced and the step redone; null: on with LoRA, "
        "off under full fine-tuning (whose state is the whole model: a dead learner then falls back to the last "
        "checkpoint).",
    )
    share_prompt_prefix: bool = Field(
        True,
        description="Run each distinct prompt of a micro-batch once and reuse its KV cache for the G completions "
        "(same loss and gradients; off under gradient checkpointing).",
    )


class TrainerConfig(_Section):
    steps: int = Field(100, ge=1, description="Optimizer steps to train.")
    prompts_per_step: int = Field(8, ge=1, description="B: prompts per step; each yields group_size completions.")
    seed: int = Field(0, description="Seed for prompt order, sampling and initialisation.")
    output_dir: str = Field(
        "outputs/run", description="Where checkpoints, metrics and reports go (a relative path is taken from the "
        "directory the run starts in, and stored absolute: learners on other nodes write there too).",
    )
    save_every: int = Field(50, ge=0, description="Checkpoint every N steps (0: only at the end).")
    log_completions_every: int = Field(10, ge=0, description="Log a table of sample completions every N steps (0: never).")
    sinks: list[MetricSink] = Field(
        default_factory=lambda: ["console", "jsonl", "tensorboard"], description="Where metrics go."
    )
    resume: Optional[str] = Field(None, description="A checkpoint or output dir to resume from.")
    ray_address: Optional[str] = Field(None, description="Ray cluster address; null starts a local cluster.")
    placement_timeout_s: float = Field(
        600.0, gt=0, description="Longest wait for the cluster to place a role's actors before the run stops, naming "
        "the resources it could not get.",
    )

    @field_validator("output_dir")
    @classmethod
    def _absolute_output_dir(cls, value: str) -> str:
        import os

        return os.path.abspath(os.path.expanduser(value))
    async_rollout: bool = Field(
        False, description="Asynchronous: generate the next steps' completions (up to trainer.max_policy_lag of them) "
        "while the current step updates; a batch then lags the learner by up to that many versions, and "
        "algo.sampler_correction weights the gap. Off: synchronous.",
    )
    max_policy_lag: int = Field(
        1, ge=0, le=64, description="With async_rollout: K, how many steps generation may run ahead of the update; a "
        "batch then lags the learner by at most K versions (0 waits for the sync, as synchronous training does).",
    )
    colocate: bool = Field(
        False, description="Rollout engines and learners on the same GPUs, taking turns: each GPU holds one rollout "
        "worker (tensor_parallel_size 1) and one learner rank, and vLLM sleeps during every update (level 1: its "
        "weights offloaded to host memory; level 2 under full fine-tuning, whose sync rewrites every weight) and "
        "wakes for the sync and the next generation. rollout.gpu_memory_utilization is then vLLM's share of each "
        "GPU while it generates; the learner's state keeps the rest. Synchronous runs only.",
    )


class EvalConfig(_Section):
    enabled: bool = Field(True, description="Evaluate on held-out prompts before training and after the last step.")
    every: int = Field(0, ge=0, description="Also evaluate every N steps (0: only before and after).")
    split: str = Field("test", description="Held-out split of data.source; never sampled for training.")
    source: Optional[str] = Field(
        None, description="Held-out data elsewhere: a dataset name, file or folder (null: eval.split of data.source).",
    )
    limit: Optional[int] = Field(None, ge=1, description="Evaluate on the first N held-out prompts (null: all).")
    max_tokens: Optional[int] = Field(
        None, ge=1, description="Longest greedy completion (null: rollout.max_completion_tokens)."
    )


class SyncConfig(_Section):
    strategy: SyncStrategy = Field(
        "auto", description="How new weights go from the learners to the rollout engines (grpo_ray.sync): lora (the "
        "adapter through the object store), full (every weight, in buckets, through the object store), broadcast "
        "(every weight from learner rank 0 over a gloo group of its own, no object store; rollout engines on CPU), "
        "vllm_transfer (every weight from learner rank 0 straight into the vLLM engines' models through vLLM's "
        "weight-transfer engines: NCCL on GPUs, gloo on CPU; no object store, no host copy on GPUs), "
        "or auto: lora with a LoRA adapter, full under full fine-tuning.",
    )


class GRPOConfig(_Section):
    """The whole run. Sections are validated individually, then the rules that span them."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "GRPOConfig":
        problems = [msg for rule in _RULES if (msg := rule(self))]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def sync_strategy(self) -> str:
        """``sync.strategy`` with auto resolved: lora with a LoRA adapter, full under full fine-tuning."""
        if self.sync.strategy != "auto":
            return self.sync.strategy
        return "lora" if self.model.lora.enabled else "full"

    @property
    def rollout_batch_size(self) -> int:
        """Completions per step: B * G."""
        return self.trainer.prompts_per_step * self.rollout.group_size

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Cross-field rules: each returns None or one sentence "field=value: why; fix".
def _rule_group_size(c: GRPOConfig) -> Optional[str]:
    if c.rollout.group_size < 2:
        return (
            f"rollout.group_size={c.rollout.group_size}: GRPO compares completions within a group, "
            "so it needs at least 2; set rollout.group_size to 2 or more (4-16 is typical)"
        )
    return None


def _rule_batch_splits(c: GRPOConfig) -> Optional[str]:
    per_step, learners = c.rollout_batch_size, c.learner.num_learners
    if per_step % learners:
        return (
            f"learner.num_learners={learners}: the {per_step} completions of a step "
            "(trainer.prompts_per_step * rollout.group_size) must divide evenly among the learners; "
            "change num_learners or prompts_per_step"
        )
    per_learner = per_step // learners
    if not c.learner.max_tokens_per_micro_batch and per_learner % c.learner.micro_batch_size:
        return (
            f"learner.micro_batch_size={c.learner.micro_batch_size}: each learner gets {per_learner} "
            f"completions per step, which must be a multiple of the micro batch; pick a divisor of "
            f"{per_learner} (or change trainer.prompts_per_step)"
        )
    return None


def _rule_token_budget(c: GRPOConfig) -> str | None:
    budget = c.learner.max_tokens_per_micro_batch
    if not budget:
        return None
    if c.algo.loss_type in SPLIT_DEPENDENT_LOSS_TYPES:
        return (
            f"learner.max_tokens_per_micro_batch={budget}: algo.loss_type={c.algo.loss_type} averages over each "
            "micro-batch's own tokens, so its loss would change with how rows are packed; use algo.loss_type=dapo "
            "(the token mean over the whole batch) or set learner.max_tokens_per_micro_batch=0"
        )
    longest = c.data.max_prompt_tokens + c.rollout.max_completion_tokens
    if budget < longest:
        return (
            f"learner.max_tokens_per_micro_batch={budget}: below the longest row (data.max_prompt_tokens + "
            f"rollout.max_completion_tokens = {longest}), which would not fit a micro-batch; raise it to {longest} "
            "or more"
        )
    return None


def _rule_epsilon_high(c: GRPOConfig) -> Optional[str]:
    hi = c.algo.epsilon_high
    if hi is not None and hi < c.algo.epsilon:
        return (
            f"algo.epsilon_high={hi}: must be >= algo.epsilon ({c.algo.epsilon}); raise it or leave it unset"
        )
    return None


def _rule_advantage_scale(c: GRPOConfig) -> Optional[str]:
    a = c.algo
    allowed = ESTIMATOR_SCALES[a.advantage_estimator]
    if a.scale_rewards not in allowed:
        return (
            f"algo.scale_rewards={a.scale_rewards!r}: advantage_estimator={a.advantage_estimator!r} scales its own "
            f"advantages, so a std scale on top would only change the step size; set algo.scale_rewards={allowed[0]}"
        )
    return None


def _rule_objective_options(c: GRPOConfig) -> Optional[str]:
    a = c.algo
    if a.delta is not None and a.policy_objective != "clip":
        return (
            f"algo.delta={a.delta}: two-sided clipping caps the clip objective's ratio, and "
            f"policy_objective={a.policy_objective!r} has none; unset algo.delta or use policy_objective=clip"
        )
    if a.delta is not None and a.delta < 1 + a.resolved_epsilon_high:
        return (
            f"algo.delta={a.delta}: below 1 + epsilon_high ({1 + a.resolved_epsilon_high:g}) it would also clip "
            f"positive-advantage tokens inside the clip range; raise it above {1 + a.resolved_epsilon_high:g} or unset it"
        )
    if a.epsilon_high is not None and a.policy_objective != "clip":
        instead = {
            "cispo": "its weight cap is algo.cispo_max_ratio (TRL's epsilon_high under loss_type=cispo)",
            "sapo": "its gate is set by algo.sapo_temperature_pos and algo.sapo_temperature_neg",
        }[a.policy_objective]
        return (
            f"algo.epsilon_high={a.epsilon_high}: policy_objective={a.policy_objective!r} has no clip range; "
            f"{instead}; unset algo.epsilon_high"
        )
    return None


def _rule_4bit(c: GRPOConfig) -> Optional[str]:
    if not c.model.load_in_4bit:
        return None
    if c.learner.zero_stage == 3:
        return "model.load_in_4bit=true: NF4 weights cannot be sharded by ZeRO-3; use learner.zero_stage 0 or 2"
    if not c.model.lora.enabled:
        return ("model.load_in_4bit=true: 4-bit weights cannot be trained, only a LoRA adapter on top of them; "
                "set model.lora.enabled=true or model.load_in_4bit=false")
    if c.model.dtype == "float16":
        return "model.load_in_4bit=true: compute in bfloat16 or float32 (model.dtype), not float16"
    return None


def _rule_full_finetune(c: GRPOConfig) -> Optional[str]:
    if not c.model.lora.enabled and c.rollout.lora_apply == "lora":
        return ("rollout.lora_apply=lora: a fully fine-tuned policy has no adapter to serve through vLLM's LoRA "
                "kernels; use rollout.lora_apply=merge (full weights are loaded in place) or model.lora.enabled=true")
    return None


def _rule_sync_strategy(c: GRPOConfig) -> Optional[str]:
    s, lora = c.sync.strategy, c.model.lora.enabled
    if s == "lora" and not lora:
        return ("sync.strategy=lora: full fine-tuning has no adapter to send; use sync.strategy=full (or auto), or "
                "model.lora.enabled=true")
    if s in ("full", "broadcast", "vllm_transfer") and lora:
        return (f"sync.strategy={s}: with a LoRA adapter the base weights never change, so only the adapter needs "
                "sending; use sync.strategy=lora (or auto)")
    if s == "broadcast" and c.rollout.num_gpus_per_worker:
        return ("sync.strategy=broadcast: its gloo transport reaches engines in the rollout worker's own process, "
                "which vLLM on GPUs is not; use sync.strategy=vllm_transfer (or full) with rollout GPUs")
    if s == "vllm_transfer":
        return _vllm_transfer_problem(c)
    return None


def _vllm_transfer_problem(c: GRPOConfig) -> Optional[str]:
    if c.rollout.engine != "vllm":
        return (f"sync.strategy=vllm_transfer: it loads weights through vLLM's weight-transfer engines, and "
                f"rollout.engine={c.rollout.engine} has none; use sync.strategy=broadcast or full")
    if c.trainer.colocate:
        return ("sync.strategy=vllm_transfer with trainer.colocate: NCCL cannot put a learner rank and the engine "
                "sharing its GPU in one group; use sync.strategy=full (or auto)")
    rollout_gpus, learner_gpus = c.rollout.num_gpus_per_worker, c.learner.num_gpus_per_learner
    for key, gpus in (("rollout.num_gpus_per_worker", rollout_gpus), ("learner.num_gpus_per_learner", learner_gpus)):
        if gpus and gpus != int(gpus):
            return (f"sync.strategy=vllm_transfer: {key}={gpus:g}; NCCL cannot put two processes that share a GPU "
                    "in one group, so give each role whole GPUs, or use sync.strategy=full")
    if rollout_gpus is not None and learner_gpus is not None and bool(rollout_gpus) != bool(learner_gpus):
        return (f"sync.strategy=vllm_transfer: rollout.num_gpus_per_worker={rollout_gpus:g} and "
                f"learner.num_gpus_per_learner={learner_gpus:g}; its transfer runs between devices of one kind (NCCL "
                "from GPU to GPU, gloo on CPU), so give both roles GPUs or neither, or use sync.strategy=full")
    return None


def _rule_rewards_resolve(c: GRPOConfig) -> Optional[str]:
    from grpo_ray.rewards import resolve_reward  # light: no torch at import

    for i, fn in enumerate(c.reward.functions):
        try:
            resolve_reward(fn.name)
        except ValueError as err:
            return f"reward.functions[{i}].name={fn.name!r}: {err}"
    return None


def _rule_tools(c: GRPOConfig) -> Optional[str]:
    r = c.rollout
    if r.kind == "single_turn" and (r.tools or r.environment):
        what = "rollout.tools" if r.tools else "rollout.environment"
        return f"{what}: tools need several turns; set rollout.kind=multi_turn"
    if r.kind == "multi_turn" and not (r.tools or r.environment):
        return "rollout.kind=multi_turn: give the model something to call: rollout.tools (e.g. [calculator]) or rollout.environment"
    if r.kind != "multi_turn":
        return None
    from grpo_ray.tools.registry import ToolSpecError, resolve_environment, resolve_tool

    try:
        names = [resolve_tool(t).name for t in r.tools]
        resolve_environment(r.environment)
    except ToolSpecError as err:
        return f"rollout.tools: {err}"
    if ":" in r.tool_parser:
        from grpo_ray.rewards.registry import RewardSpecError, resolve_reward

        try:
            resolve_reward(r.tool_parser)
        except RewardSpecError as err:
            return f"rollout.tool_parser={r.tool_parser!r}: {str(err).replace('reward spec', 'parser spec')}"
    if len(set(names)) < len(names):
        return f"rollout.tools={r.tools}: two tools share a name; each name must be one tool"
    return None


def _rule_tensor_parallel(c: GRPOConfig) -> Optional[str]:
    gpus = c.rollout.num_gpus_per_worker
    if c.rollout.tensor_parallel_size > 1 and gpus is not None and gpus < c.rollout.tensor_parallel_size:
        return (
            f"rollout.tensor_parallel_size={c.rollout.tensor_parallel_size}: each rollout worker needs that many "
            f"GPUs but rollout.num_gpus_per_worker={c.rollout.num_gpus_per_worker}; raise num_gpus_per_worker"
        )
    return None


def _rule_learner_gpus(c: GRPOConfig) -> str | None:
    gpus, n = c.learner.num_gpus_per_learner, c.learner.num_learners
    if gpus is None or gpus == int(gpus):
        return None
    if gpus > 1:
        return (f"learner.num_gpus_per_learner={gpus:g}: a learner rank computes on one GPU; give it whole GPUs "
                "(1, or leave it unset)")
    if n > 1:  # a lone learner may share its GPU with the rollout worker (one-GPU machines)
        return (f"learner.num_gpus_per_learner={gpus:g}: with {n} learners two ranks could land on one GPU, which "
                "NCCL refuses; give each learner a whole GPU (1, or leave it unset), or train with "
                "learner.num_learners=1 to share one GPU with the rollout worker")
    return None


def _rule_colocate(c: GRPOConfig) -> str | None:
    if not c.trainer.colocate:
        return None
    r, lc = c.rollout, c.learner
    if c.trainer.async_rollout:
        return ("trainer.colocate: generation and updates take turns on the same GPUs, so they cannot overlap; set "
                "trainer.async_rollout=false, or trainer.colocate=false to give each role GPUs of its own")
    if r.tensor_parallel_size != 1:
        return (f"trainer.colocate with rollout.tensor_parallel_size={r.tensor_parallel_size}: each GPU holds one "
                "rollout engine and one learner rank, so an engine spans one GPU; set tensor_parallel_size=1 (with "
                "LoRA an 8B-14B model fits one GPU beside its learner), or trainer.colocate=false")
    if lc.num_learners != r.num_workers:
        return (f"trainer.colocate: each GPU holds one rollout worker and one learner rank, but rollout.num_workers="
                f"{r.num_workers} and learner.num_learners={lc.num_learners}; make them equal (one per GPU)")
    set_gpus = [k for k, v in (("rollout.num_gpus_per_worker", r.num_gpus_per_worker),
                               ("learner.num_gpus_per_learner", lc.num_gpus_per_learner)) if v is not None]
    if set_gpus:
        return (f"trainer.colocate: {' and '.join(set_gpus)} must stay unset; the two roles share each GPU, half a "
                "GPU each as Ray counts it")
    return None


def _rule_inflight_updates(c: GRPOConfig) -> str | None:
    r = c.rollout
    if not r.inflight_weight_updates:
        return None
    if not c.trainer.async_rollout:
        return ("rollout.inflight_weight_updates: new weights reach generations already running only in async mode, "
                "where generation runs during updates; set trainer.async_rollout=true")
    if r.engine != "vllm":
        return (f"rollout.inflight_weight_updates with rollout.engine={r.engine}: it loads weights between decoding "
                "steps, which only the vllm engine takes one at a time; use rollout.engine=vllm")
    if c.sync_strategy in ("broadcast", "vllm_transfer"):
        return (f"rollout.inflight_weight_updates with sync.strategy={c.sync_strategy}: a broadcast needs every "
                "worker to receive at once, and an in-flight worker takes a version when its steps allow; use "
                "sync.strategy=full")
    return None


_RULES = [
    _rule_group_size, _rule_batch_splits, _rule_token_budget, _rule_epsilon_high, _rule_advantage_scale,
    _rule_objective_options, _rule_4bit, _rule_full_finetune, _rule_sync_strategy, _rule_tensor_parallel,
    _rule_learner_gpus, _rule_colocate, _rule_inflight_updates, _rule_rewards_resolve, _rule_tools,
]

# Keys that moved, old dotted name -> new: an old config gets a one-line error naming the new key
# (saved run configs are read through migrate_renamed_keys, so old runs still load).
RENAMED_KEYS = {
    "rollout.weight_sync": "rollout.lora_apply",
}


# ---------------------------------------------------------------------------------------------
# Loading: YAML + dotted overrides -> validated GRPOConfig, errors as one line each.
# ---------------------------------------------------------------------------------------------
_EXPONENT_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"algo.beta=0.04"`` -> (["algo", "beta"], 0.04). Values are parsed as YAML scalars/lists."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. algo.beta=0.04")
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value):
        # YAML 1.1 reads 1e-4 (no dot) as a string; a learning rate typed that way must be a number
        value = float(value)
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` set (intermediate dicts created)."""
    return with_values(raw, {tuple(path): value for path, value in map(parse_override, overrides)})


def with_values(raw: dict[str, Any], values: dict) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted key (a str, or a list of parts) set to its value."""
    import copy

    out = copy.deepcopy(raw)
    for key, value in values.items():
        path = key.split(".") if isinstance(key, str) else list(key)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = copy.deepcopy(value)
    return out


def read_yaml(path: Union[str, Path]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: the top level must be a mapping of sections")
    return data


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[list[str]] = None) -> GRPOConfig:
    """Read YAML (or start from defaults), apply overrides, validate. Raises :class:`ConfigError`."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, list(overrides or [])))


def migrate_renamed_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config with every renamed key under its new name (for run folders written
    by earlier versions; a user's own config gets an error naming the new key instead)."""
    import copy

    out = copy.deepcopy(raw)
    for old, new in RENAMED_KEYS.items():
        *parents, leaf = old.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            out = with_values(out, {new: node.pop(leaf)})
    return out


def config_from_dict(raw: dict[str, Any]) -> GRPOConfig:
    try:
        return GRPOConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(_describe_error(e) for e in err.errors())) from None


def _describe_error(e: dict[str, Any]) -> str:
    loc = [str(p) for p in e["loc"]]
    dotted = ".".join(loc)
    if e["type"] == "extra_forbidden":
        if dotted in RENAMED_KEYS:
            return f"config key {dotted!r} was renamed: use {RENAMED_KEYS[dotted]!r}"
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean {'.'.join(loc[:-1] + [close[0]])!r}?" if close else f"known keys here: {', '.join(known)}"
        return f"unknown config key {dotted!r}: {hint}"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not loc:  # cross-field rules already name their fields
        return msg
    return f"{dotted}={e.get('input')!r}: {msg}"


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = GRPOConfig
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def describe_fields(model: type[BaseModel] = GRPOConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf field: the CLI's help for overrides."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, prefix=f"{key}."))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump() for d in default]
        rows.append((key, repr(default), field.description or ""))
    return rows
