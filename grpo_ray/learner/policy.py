"""The policy learner: the trainable policy (base + PEFT LoRA, or the whole model) under a DeepSpeed engine.

One instance per data-parallel rank. With LoRA the reference policy is the same model with the adapter
disabled (``disable_adapter()``), not a second copy in memory; under full fine-tuning it is a frozen
copy of the starting model, loaded only when ``algo.beta > 0``. DeepSpeed runs ZeRO 0/1/2/3 over gloo on
CPU and NCCL on GPUs; this class only differs between them in the backend and device it is given.

Gradient bookkeeping: DeepSpeed averages gradients over accumulation steps and ranks, but the
split-invariant loss types (grpo, dr_grpo, dapo: ``LOSS_AGGREGATIONS.get(name).split_invariant``) are
written as sums over rows normalised by the *global* count (``grpo_ray.algo.aggregation``). Each
micro-batch loss is therefore multiplied by accumulation steps x world size before ``backward``, so the
step's gradient equals the gradient of the loss on the whole global batch, however it is split.
``bnpo`` is local by definition and keeps DeepSpeed's averaging, as in TRL (``loss_scales``).

Micro-batches hold ``micro_batch_size`` rows, or are packed to ``max_tokens_per_micro_batch`` padded
tokens. Packed, their number varies from step to step and rank to rank, which DeepSpeed's fixed
``gradient_accumulation_steps`` cannot follow: the learner then marks the last micro-batch of each
step as the accumulation boundary itself (``set_gradient_accumulation_boundary``), DeepSpeed's count is
only the divisor of each loss (which the scale above undoes), and the ranks run as many micro-batches
as the rank with the most (``grpo_ray.learner.micro_batches``). bnpo, whose loss changes with the
packing, is refused with a budget.

Logprobs come from the decoder's hidden states with the LM head applied ``logprob_chunk_size``
positions at a time (``grpo_ray.learner.forward``), so [rows, T, vocab] float32 logits never exist;
``logprob_chunk_size=0`` computes the whole logits as before.

An update whose loss or gradient norm is nan or inf is not applied, on any rank, and the learner raises
:class:`~grpo_ray.errors.NonFiniteUpdate`, so the run stops at the step before it (a trial of a shared
sweep fails alone: its slot keeps its last good state and the other slots never held it). DeepSpeed's
ZeRO, bf16 and fp16 optimizers already skip a step whose gradient norm is not finite; under ZeRO-0 in
float32 the optimizer is torch's own, which would apply it, so the learner skips that step itself. A
finite loss whose scaled fp16 gradients overflow is loss scaling's ordinary skipped step.

Metrics are joined by what they are (``grpo_ray.utils.reduce``): means weighted by tokens over
micro-batches and ranks, maxima by their max, ``loss`` and ``num_tokens`` summed (each rank reports
its share of the global loss).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Optional

import torch

from grpo_ray.algo import LOSS_AGGREGATIONS, compute_policy_loss, pad_completion_values, truncated_importance_weights
from grpo_ray.config import AlgoConfig, LearnerConfig, ModelConfig
from grpo_ray.errors import NonFiniteUpdate
from grpo_ray.learner.forward import completion_logprobs
from grpo_ray.learner.micro_batches import MicroBatch, in_step, row_groups
from grpo_ray.learner.model import build_policy_model, build_reference_model, torch_dtype
from grpo_ray.learner.padding import PaddedBatch, pad_rows, unique_prompts
from grpo_ray.models.adapter_io import peft_config_dict, write_adapter_folder
from grpo_ray.utils.reduce import reduce_named
from grpo_ray.wire import LoraAdapter, TrainShard


def loss_scales(loss_type: str, grad_accum: int, world_size: int, count: Optional[int] = None) -> tuple[float, float]:
    """(backward multiplier, reported-loss factor) for each micro-batch loss of ``loss_type``.
    ``grad_accum``: DeepSpeed's accumulation count, which divides every loss; ``count``: the
    micro-batches this step really has (``grad_accum`` unless the learner marks the boundary itself).

    A split-invariant loss type (its registry entry says so) sums to the global batch's loss over the
    micro-batches and ranks of a step, so each micro-batch loss is multiplied by grad_accum x world_size
    to undo DeepSpeed's averaging, and reported as it is: the sum over micro-batches and ranks is the
    global loss. A local one (bnpo) is averaged over the step's ``count`` micro-batches and the ranks:
    its backward multiplier turns DeepSpeed's division by grad_accum into one by count, and it reports
    its micro-batch loss over count x world_size, so that the same sum is the mean.
    """
    count = grad_accum if count is None else count
    if LOSS_AGGREGATIONS.get(loss_type).split_invariant:
        return float(grad_accum * world_size), 1.0
    return grad_accum / count, 1.0 / (count * world_size)


def accumulation_steps(c: LearnerConfig, rows_per_rank: int) -> int:
    """The micro-batches per step DeepSpeed is told of. Packed to a token budget, their number varies and
    the learner marks the boundary itself; DeepSpeed is then told the most a shard can make (a row
    each), a number that only divides each micro-batch's loss (undone by ``loss_scales``)."""
    return rows_per_rank if c.max_tokens_per_micro_batch else rows_per_rank // c.micro_batch_size


def deepspeed_config(c: LearnerConfig, rows_per_rank: int, dtype: torch.dtype) -> dict[str, Any]:
    """The DeepSpeed config of one rank. Mixed precision follows the run's compute dtype (not the first
    parameter's: a 4-bit or LoRA model mixes dtypes), with DeepSpeed's float32 master weights."""
    steps = accumulation_steps(c, rows_per_rank)
    return {
        "train_micro_batch_size_per_gpu": rows_per_rank // steps,
        "gradient_accumulation_steps": steps,
        "gradient_clipping": c.max_grad_norm,
        "zero_optimization": {"stage": c.zero_stage},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class PolicyLearner:
    def __init__(
        self,
        model_cfg: ModelConfig,
        learner_cfg: LearnerConfig,
        algo_cfg: AlgoConfig,
        *,
        total_steps: int,
        rows_per_step: int,
        max_completion_tokens: int,
        temperature: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int = 29500,
        seed: int = 0,
        device: Optional[str] = None,
    ) -> None:
        self.algo, self.cfg, self.model_cfg = algo_cfg, learner_cfg, model_cfg
        self.lora = model_cfg.lora.enabled
        self.rank, self.world_size = rank, world_size
        self.temperature, self.max_completion_tokens = temperature, max_completion_tokens
        # a KV cache and activation recomputation do not mix: share prompts only without checkpointing
        self.share_prefix = learner_cfg.share_prompt_prefix and not learner_cfg.gradient_checkpointing
        self.device = self._init_distributed(rank, world_size, master_addr, master_port, device)
        self.dtype = torch_dtype(model_cfg.dtype, self.device)
        torch.manual_seed(seed)  # same LoRA init on every rank (DeepSpeed also broadcasts rank 0's)
        model, self.tokenizer = build_policy_model(model_cfg, learner_cfg, device=self.device)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if not learner_cfg.max_tokens_per_micro_batch and rows_per_step % learner_cfg.micro_batch_size:
            raise ValueError(f"rows_per_step={rows_per_step} is not a multiple of micro_batch_size={learner_cfg.micro_batch_size}")
        if learner_cfg.max_tokens_per_micro_batch and not LOSS_AGGREGATIONS.get(algo_cfg.loss_type).split_invariant:
            raise ValueError(f"loss_type={algo_cfg.loss_type} would depend on how rows are packed; "
                             "use it without max_tokens_per_micro_batch")
        self.grad_accum = accumulation_steps(learner_cfg, rows_per_step)  # DeepSpeed's count, which divides each loss
        self.rows_per_step = rows_per_step
        # whether the learner marks each step's last micro-batch itself (a token budget makes their number
        # vary; a learner shared by several runs (``configure``) has one count per run)
        self.boundary_by_hand = bool(learner_cfg.max_tokens_per_micro_batch)
        self.engine = self._init_engine(model, rows_per_step, total_steps * algo_cfg.num_iterations)
        self.reference = self._init_reference() if not self.lora and algo_cfg.beta != 0.0 else None
        self.steps_done = 0
        self._adapter_names: Optional[dict[str, torch.nn.Parameter]] = None  # see _adapter_parameters

    # -- setup ----------------------------------------------------------------------------------
    @staticmethod
    def _init_distributed(rank: int, world_size: int, addr: str, port: int, device: Optional[str]) -> torch.device:
        on_gpu = torch.cuda.is_available() if device is None else device == "cuda"
        if on_gpu and not torch.cuda.is_available():
            raise RuntimeError("this learner was given GPUs but torch sees no CUDA device (a CPU build of torch, or "
                               "a driver older than the CUDA torch was built for); see 'GPU install' in docs/gpu_clusters.md")
        if not on_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        os.environ.update(
            MASTER_ADDR=addr, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
            LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"),
        )
        import deepspeed

        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)
        return torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")

    def _init_engine(self, model, rows_per_rank: int, total_optimizer_steps: int):
        import deepspeed
        from transformers import get_scheduler

        c = self.cfg
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=c.lr, betas=tuple(c.adam_betas), weight_decay=c.weight_decay)
        schedule = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[c.lr_scheduler]
        scheduler = get_scheduler(
            schedule, optimizer, num_warmup_steps=int(c.warmup_ratio * total_optimizer_steps),
            num_training_steps=total_optimizer_steps,
        )
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, model_parameters=trainable,
            config=deepspeed_config(c, rows_per_rank, self.dtype),
        )
        return engine

    def _init_reference(self):
        """The frozen starting model; under ZeRO-3 sharded over the ranks like the policy (an engine
        with no optimizer), otherwise a plain module on this rank's device."""
        model = build_reference_model(self.model_cfg, device=self.device)
        if self.cfg.zero_stage != 3:
            return model
        import deepspeed

        config = {"train_micro_batch_size_per_gpu": self.cfg.micro_batch_size, "zero_optimization": {"stage": 3},
                  "bf16": {"enabled": self.dtype == torch.bfloat16}, "steps_per_print": 2**31 - 1}
        engine, *_ = deepspeed.initialize(model=model, config=config)
        return engine

    @property
    def peft_model(self):
        return self.engine.module

    # -- forward --------------------------------------------------------------------------------
    def _shares_prefix(self, mb: PaddedBatch) -> bool:
        """Whether running each distinct prompt of ``mb`` once saves anything (and is allowed)."""
        if not self.share_prefix or mb.completion_ids.shape[1] < 2:
            return False
        first, inverse = unique_prompts(mb)
        return len(first) < len(inverse)

    def _completion_logprobs(self, mb: PaddedBatch, *, temperature: float, with_entropy: bool = False,
                             reference: bool = False, share: bool | None = None, num_chunks: int | None = None):
        """[n, T] logprobs of the completion tokens (and their entropies) for one micro-batch
        (``grpo_ray.learner.forward``); ``share`` and ``num_chunks`` as the ranks agreed (None: this
        rank's own choice)."""
        if reference and self.reference is not None:  # a ZeRO-3 engine without optimizer, or the model itself
            call, model = self.reference, getattr(self.reference, "module", self.reference)
        else:
            call, model = self.engine, self.peft_model
        return completion_logprobs(
            call, model, mb, temperature=temperature, chunk_size=self.cfg.logprob_chunk_size, with_entropy=with_entropy,
            share_prefix=self._shares_prefix(mb) if share is None else share, num_chunks=num_chunks,
        )

    @contextmanager
    def _scoring(self, reference: bool):
        """No-grad forward passes, under the reference policy when asked (with LoRA: the adapter disabled)."""
        disable = self.peft_model.disable_adapter() if reference and self.lora else nullcontext()
        with torch.no_grad(), disable:
            yield

    def _micro_batches(self, shard: TrainShard) -> list[MicroBatch]:
        """The shard's micro-batches as every rank runs them (see ``grpo_ray.learner.micro_batches``)."""
        c = self.cfg
        groups = row_groups(shard, c.micro_batch_size, c.max_tokens_per_micro_batch)
        micro = [self._micro_batch(shard, rows) for rows in groups]
        expected = self.rows_per_step // c.micro_batch_size
        if not c.max_tokens_per_micro_batch and len(micro) != expected:
            raise ValueError(f"learner rank {self.rank} got {len(shard.completion_ids)} rows; it was built for "
                             f"{expected} micro-batches of {c.micro_batch_size}")
        if self.world_size == 1:
            return micro
        packed, zero3 = bool(c.max_tokens_per_micro_batch), c.zero_stage == 3
        return in_step(micro, count=packed, forward_calls=zero3, device=self.device)

    def _micro_batch(self, shard: TrainShard, rows: list[int]) -> MicroBatch:
        """Rows ``rows`` of the shard, padded; the completion mask is the shard's per-token loss mask (0 on
        padding and on tokens out of the loss)."""
        mb = pad_rows(_take(shard.prompt_ids, rows), _take(shard.completion_ids, rows), self.pad_id).to(self.device)
        width = mb.completion_ids.shape[1]
        loss_mask = pad_completion_values(_take(shard.loss_mask, rows), width).to(self.device)
        mb.completion_mask = mb.completion_mask * loss_mask.to(mb.completion_mask.dtype)
        adv = torch.tensor(_take(shard.advantages, rows), dtype=torch.float32, device=self.device)
        correct = self.algo.sampler_correction and shard.sampling_logprobs is not None
        sampled = pad_completion_values(_take(shard.sampling_logprobs, rows), width) if correct else None
        chunk = self.cfg.logprob_chunk_size
        return MicroBatch(mb, adv, sampled.to(self.device) if correct else None, self._shares_prefix(mb),
                          -(-width // chunk) if chunk else None)

    # -- the update -------------------------------------------------------------------------------
    def train_step(self, shard: TrainShard) -> dict[str, float]:
        """num_iterations optimizer steps on this shard; returns metrics for this rank."""
        start = time.perf_counter()
        a = self.algo
        micro = self._micro_batches(shard)
        n = len(micro)
        ref = self._no_grad_logprobs(micro, reference=True) if a.beta != 0.0 else [None] * n
        old = self._no_grad_logprobs(micro, reference=False) if a.num_iterations > 1 else [None] * n
        scale, loss_factor = loss_scales(a.loss_type, self.grad_accum, self.world_size, n)
        parts, weights = [], []
        grad_norm = None
        for _ in range(a.num_iterations):
            losses = []
            for i, m in enumerate(micro):
                if self.boundary_by_hand:  # DeepSpeed's own count cannot know where this step ends
                    self.engine.set_gradient_accumulation_boundary(i == n - 1)
                loss, metrics, entropy = self._micro_batch_loss(m, ref[i], old[i], shard)
                losses.append(loss.detach())
                self.engine.backward(loss * (scale * m.weight))  # DeepSpeed divides by gas, and averages over ranks
                if i == n - 1:
                    grad_norm = self._boundary_step(losses)
                else:
                    self.engine.step()  # inside the accumulation: DeepSpeed only counts the micro-batch
                if m.weight:  # a stand-in (weight 0) only kept this rank in step with the others
                    part, tokens = _micro_batch_metrics(loss, metrics, entropy, m.batch.completion_mask,
                                                        loss_factor / a.num_iterations, a.num_iterations)
                    parts.append(part)
                    weights.append(tokens)
        self.steps_done += 1
        result = reduce_named(parts, weights=weights)
        result["grad_norm"] = grad_norm if grad_norm is not None else float(self.engine.get_global_grad_norm() or 0.0)
        result["learning_rate"] = float(self.engine.lr_scheduler.get_last_lr()[0])
        result["timing/learner_step"] = time.perf_counter() - start
        return result

    def _micro_batch_loss(self, m: MicroBatch, ref, old, shard: TrainShard):
        """(loss, metrics, entropy [n, T]) of one micro-batch under the current policy."""
        a, mb = self.algo, m.batch
        logprobs, entropy = self._completion_logprobs(mb, temperature=self.temperature, with_entropy=True,
                                                      share=m.share_prefix, num_chunks=m.num_chunks)
        old = old if old is not None else logprobs.detach()
        token_weights, sampler_metrics = None, {}
        if m.sampling_logprobs is not None:  # the rollout engine's policy vs the learner's old policy
            token_weights, sampler_metrics = truncated_importance_weights(
                old, m.sampling_logprobs, mb.completion_mask, a.sampler_correction_cap)
        loss, metrics = compute_policy_loss(
            logprobs, old, m.advantages, mb.completion_mask, token_weights=token_weights,
            loss_type=a.loss_type, epsilon_low=a.epsilon, epsilon_high=a.resolved_epsilon_high,
            beta=a.beta, ref_logprobs=ref, kl_estimator=a.kl_estimator,
            importance_sampling_level=a.importance_sampling_level,
            policy_objective=a.policy_objective, delta=a.delta, cispo_max_ratio=a.cispo_max_ratio,
            sapo_temperature_pos=a.sapo_temperature_pos, sapo_temperature_neg=a.sapo_temperature_neg,
            max_completion_length=self.max_completion_tokens,
            global_num_tokens=shard.global_num_tokens, global_num_sequences=shard.global_num_sequences,
        )
        return loss, {**metrics, **sampler_metrics}, entropy

    def _boundary_step(self, losses: list[torch.Tensor]) -> Optional[float]:
        """The optimizer step at the accumulation boundary, unless it is not finite (then
        :class:`NonFiniteUpdate`); returns the gradient norm the learner measured (ZeRO-0 in float32)."""
        grad_norm = self._grad_norm()
        if grad_norm is not None and not math.isfinite(grad_norm):
            self._skip_step()
        else:
            self.engine.step()
        self._check_applied(losses, grad_norm)
        return grad_norm

    def _skip_step(self) -> None:
        """Under ZeRO-0 in float32 DeepSpeed steps with torch's own optimizer, which would apply a
        non-finite gradient (its other optimizers skip one themselves): drop the gradients, and let
        DeepSpeed count this micro-batch as one inside the accumulation, so its step neither clips nor
        steps. The boundary goes back to DeepSpeed's own count (or is set again by the next step)."""
        self.engine.zero_grad()
        self.engine.set_gradient_accumulation_boundary(False)
        self.engine.step()
        self.engine.set_gradient_accumulation_boundary(None)

    def _check_applied(self, losses: list[torch.Tensor], grad_norm: Optional[float]) -> None:
        """Raise :class:`NonFiniteUpdate` after a boundary step that was not applied for a nan or inf.
        Every rank refuses the step (the gradients it would apply are reduced over the ranks, so a rank
        with finite losses sees them too); each rank raises, with its own loss or the shared norm."""
        bad = next((float(x) for x in losses if not torch.isfinite(x)), None)
        where = f"(learner update {self.steps_done + 1}), so the update was not applied"
        if bad is not None:
            raise NonFiniteUpdate(f"the loss is {bad} on rank {self.rank} {where}")
        if grad_norm is not None and not math.isfinite(grad_norm):
            raise NonFiniteUpdate(f"the gradient norm is {grad_norm} {where}")
        if not self.engine.was_step_applied() and not self.engine.fp16_enabled():  # fp16: loss scaling's skip
            raise NonFiniteUpdate(f"the gradients are not finite {where}")

    def _grad_norm(self) -> Optional[float]:
        """Pre-clip gradient norm at the boundary. ZeRO 1-3 optimizers report it themselves; ZeRO-0 in
        fp32 clips without keeping the value, so measure it here (grads are already all-reduced)."""
        if self.cfg.zero_stage != 0 or self.engine.bfloat16_enabled() or self.engine.fp16_enabled():
            return None
        grads = [p.grad.detach().float().norm() for p in self.peft_model.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _no_grad_logprobs(self, micro: list[MicroBatch], *, reference: bool) -> list[torch.Tensor]:
        with self._scoring(reference):
            return [self._completion_logprobs(m.batch, temperature=self.temperature, reference=reference,
                                              share=m.share_prefix, num_chunks=m.num_chunks)[0] for m in micro]

    # -- inspection ---------------------------------------------------------------------------------
    def logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], *, reference: bool = False) -> list[list[float]]:
        """Logprobs of given completions at temperature 1 (the sampler's logprobs at temperature 1)."""
        mb = pad_rows(prompt_ids, completion_ids, self.pad_id).to(self.device)
        with self._scoring(reference):
            lp, _ = self._completion_logprobs(mb, temperature=1.0, reference=reference)
        return [row[: len(c)].tolist() for row, c in zip(lp, completion_ids)]

    # -- weights for the rollout engines ------------------------------------------------------------
    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """The LoRA tensors on CPU, by PEFT's adapter state-dict names, on rank 0 (other ranks get {}),
        gathered from ZeRO-3 shards when needed (call on every rank)."""
        zero3 = self.cfg.zero_stage == 3  # only ZeRO-3 needs the parameters themselves: skip the walk otherwise
        lora_params = [p for n, p in self.peft_model.named_parameters() if "lora_" in n] if zero3 else []
        with _gathered(lora_params, self.cfg.zero_stage):
            if self.rank != 0:
                return {}
            return {k: p.detach().to("cpu", copy=True) for k, p in self._adapter_parameters().items()}

    def lora_config_dict(self) -> dict[str, Any]:
        return peft_config_dict(self.peft_model.peft_config["default"])

    def full_state(self, on_device: bool = False) -> Iterator[tuple[str, Optional[torch.Tensor]]]:
        """Every weight of the policy as ``(HF checkpoint name, CPU tensor)``, one at a time, on rank 0.
        Other ranks make no copy: under ZeRO-3 they yield ``(name, None)`` as each weight is gathered by
        every rank in turn (call on every rank and consume the whole iterator); under ZeRO 0-2 they
        yield nothing. ``on_device``: rank 0's tensors stay where the learner computes (a transfer
        straight from the GPU): the parameter itself, read before the next update changes it, or under
        ZeRO-3 a device copy of the gathered weight, which is released when the next one is gathered."""
        if self.rank != 0 and self.cfg.zero_stage != 3:
            return
        zero3 = self.cfg.zero_stage == 3
        for name, param in self.peft_model.named_parameters():
            with _gathered([param], self.cfg.zero_stage):
                tensor = None
                if self.rank == 0:
                    tensor = param.detach()
                    if not on_device:
                        tensor = tensor.to("cpu", copy=True)
                    elif zero3:
                        tensor = tensor.clone()
            yield name, tensor

    def full_state_metadata(self) -> list[tuple[str, str, list[int]]]:
        """``(name, dtype, shape)`` of every weight :meth:`full_state` yields, in its order, without
        gathering anything (a ZeRO-3 partition keeps the whole shape in ``ds_shape``)."""
        return [(name, str(p.dtype).removeprefix("torch."), list(getattr(p, "ds_shape", p.shape)))
                for name, p in self.peft_model.named_parameters()]

    def _adapter_parameters(self) -> dict[str, torch.nn.Parameter]:
        """PEFT's adapter state-dict names -> the parameters behind them. PEFT's
        ``get_peft_model_state_dict`` walks the whole model's state dict on every call (for a small model,
        far longer than copying the adapter's tensors), so the mapping is worked out
        once: a LoRA parameter's name without the adapter name, checked to give PEFT's exact keys and
        tensors. Where it does not (other saved modules), PEFT's function is called each time."""
        from peft import get_peft_model_state_dict

        if self._adapter_names is None:
            expected = get_peft_model_state_dict(self.peft_model)
            mine = {n.replace(".default.", "."): p for n, p in self.peft_model.named_parameters() if "lora_" in n}
            same = mine.keys() == expected.keys() and all(mine[k].data_ptr() == expected[k].data_ptr() for k in mine)
            self._adapter_names = mine if same else {}
        return self._adapter_names or get_peft_model_state_dict(self.peft_model)

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, directory: str, version: int) -> None:
        """Optimizer, scheduler and RNG state (every rank), and the policy in its exportable form (rank 0):
        the PEFT adapter folder ``adapter/``, or under full fine-tuning the whole model as a transformers
        folder ``model/`` (safetensors, config, tokenizer) that eval, serve and vLLM load as it is."""
        d = Path(directory)
        if self.lora:
            adapter = LoraAdapter(version, self.lora_tensors(), self.lora_config_dict())
        else:  # built on rank 0 alone; the other ranks only join ZeRO-3's gathers
            state = {name: tensor for name, tensor in self.full_state() if tensor is not None}
        self.engine.save_checkpoint(
            str(d / "learner"), tag="state", exclude_frozen_parameters=self.lora,
            client_state={"steps_done": self.steps_done, "torch_rng": torch.get_rng_state()},
        )
        if self.rank != 0:
            return
        if self.lora:
            write_adapter_folder(adapter, d / "adapter")
            self.tokenizer.save_pretrained(str(d / "adapter"))
        else:
            self.peft_model.save_pretrained(str(d / "model"), state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(str(d / "model"))

    def load(self, directory: str) -> None:
        _, client = self.engine.load_checkpoint(
            str(Path(directory) / "learner"), tag="state", load_module_strict=False,
            load_optimizer_states=True, load_lr_scheduler_states=True,
        )
        if client:
            self.steps_done = int(client.get("steps_done", 0))
            if "torch_rng" in client:
                torch.set_rng_state(client["torch_rng"])
        self._apply_configured_hyperparameters()

    # -- a copy of the trainable state off this process (grpo_ray.run.snapshots) ------------
    def snapshot(self) -> dict[str, bytes]:
        """This rank's whole trainable state as file contents: DeepSpeed's own checkpoint of the step
        (trainable weights, optimizer and scheduler, for every ZeRO stage) written to memory-backed
        disk and read back, plus this rank's RNG. :meth:`restore` on a fresh learner of the same
        config and world size makes it this learner again."""
        import io
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="grpo_ray_snapshot_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        try:
            self.engine.save_checkpoint(str(root), tag="live", exclude_frozen_parameters=self.lora, save_latest=False,
                                        client_state={"steps_done": self.steps_done})
            files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rng = io.BytesIO()
        torch.save({"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}, rng)
        files[f"rng/rank{self.rank}.pt"] = rng.getvalue()
        return files

    def restore(self, files: dict[str, bytes]) -> None:
        """Become the learner whose ranks' :meth:`snapshot` files (all of them, joined) are given."""
        import io
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="grpo_ray_restore_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        try:
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
            _, client = self.engine.load_checkpoint(str(root), tag="live", load_module_strict=False,
                                                    load_optimizer_states=True, load_lr_scheduler_states=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        self.steps_done = int((client or {}).get("steps_done", 0))
        rng = torch.load(io.BytesIO(files[f"rng/rank{self.rank}.pt"]), weights_only=False)
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"])

    def configure(self, learner_cfg: LearnerConfig, algo_cfg: AlgoConfig, *, rows_per_step: int,
                  max_completion_tokens: int, temperature: float) -> None:
        """Train under another run's settings from now on (``grpo_ray.learner.slots``: several runs share
        this learner, one at a time). Only what each update reads may differ: the objective, the
        optimizer's lr, betas and weight decay, the rows a step and how they are split; the model and the
        schedule's shape are the engine's (``grpo_ray.learner.slots.ENGINE_FIELDS``). The learner marks
        each step's boundary itself from now on, since the runs' micro-batch counts may differ."""
        self.cfg, self.algo = learner_cfg, algo_cfg
        self.rows_per_step, self.max_completion_tokens, self.temperature = rows_per_step, max_completion_tokens, temperature
        self.share_prefix = learner_cfg.share_prompt_prefix and not learner_cfg.gradient_checkpointing
        self.boundary_by_hand = True
        self._apply_configured_hyperparameters()

    def _apply_configured_hyperparameters(self) -> None:
        """The loaded scheduler and optimizer carry the saved run's lr, betas and weight decay; this
        run's config wins (a resumed run keeps them; a PBT trial continuing another's checkpoint gets
        its own mutated values). The schedule's position is kept."""
        c, scheduler = self.cfg, self.engine.lr_scheduler
        scheduler.base_lrs = [c.lr] * len(scheduler.base_lrs)
        for group, lr_lambda in zip(self.engine.optimizer.param_groups, scheduler.lr_lambdas):
            group.update(lr=c.lr * lr_lambda(scheduler.last_epoch), betas=tuple(c.adam_betas), weight_decay=c.weight_decay)
        scheduler._last_lr = [g["lr"] for g in self.engine.optimizer.param_groups]


def _take(values: list, rows: list[int]) -> list:
    return [values[r] for r in rows]


def _gathered(params, zero_stage: int):
    if zero_stage != 3 or not params:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _micro_batch_metrics(loss, metrics, entropy, mask, loss_factor: float, iterations: int) -> tuple[dict[str, float], float]:
    """One micro-batch's metrics and its token count (the weight of its means). ``loss`` is scaled to
    this micro-batch's share of the global loss, ``num_tokens`` to a count per step."""
    tokens = float(mask.sum())
    out = {"loss": float(loss.detach()) * loss_factor, "num_tokens": tokens / iterations}
    if entropy is not None and tokens:
        out["entropy"] = float((entropy * mask).sum()) / tokens
    for k, v in metrics.items():
        if k != "num_tokens" and torch.isfinite(v):
            out[k] = float(v)
    return out, tokens
