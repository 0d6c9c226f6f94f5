"""Rollout generation with transformers ``generate``: the fallback engine, and the one that runs wherever
PyTorch does (a GPU with no vLLM build, say).

Slower than vLLM but the same interface and outputs: token ids, text, the logprob of each sampled token
after temperature, finish reasons. Each prompt's group is drawn under its own seed, so results do not
depend on batching. A LoRA policy is a PEFT model whose adapter is swapped in memory; a fully
fine-tuned one takes its weights whole; ``quantization="nf4"`` loads the base in NF4 exactly as the
learner does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from grpo_ray.algo.masks import completion_mask_from_eos
from grpo_ray.rollout.engines.base import EngineSpec, RolloutEngine
from grpo_ray.rollout.prompting import encode_prompts, per_prompt_seeds
from grpo_ray.wire import GenerationRequest, LoraAdapter, RolloutBatch


class HFEngine(RolloutEngine):
    """A transformers causal LM (wrapped in PEFT for a LoRA policy)."""

    @classmethod
    def launch_args(cls, spec: EngineSpec, model_path: Optional[str] = None) -> tuple[dict[str, Any], dict[str, str]]:
        return {"model": model_path or spec.model_path, "dtype": spec.dtype, "device": spec.device,
                "quantization": spec.quantization}, {}

    @classmethod
    def from_spec(cls, spec: EngineSpec) -> "HFEngine":
        return cls(spec.model_path, dtype=spec.dtype, lora=spec.lora, device=spec.device,
                   quantization=spec.quantization, trust_remote_code=spec.trust_remote_code, revision=spec.revision)

    def __init__(self, model_path: str, *, dtype: str = "auto", lora: Optional[dict[str, Any]] = None,
                 device: Optional[str] = None, quantization: Optional[str] = None, trust_remote_code: bool = False,
                 revision: Optional[str] = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32}.get(dtype, dtype)
        if isinstance(torch_dtype, str):
            torch_dtype = getattr(torch, torch_dtype)
        hub = dict(trust_remote_code=trust_remote_code, revision=revision)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, **hub)
        if quantization == "nf4":
            from grpo_ray.models.nf4 import nf4_config

            base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, quantization_config=nf4_config(torch_dtype),
                                                        device_map={"": self.device}, **hub)
        else:
            base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, **hub).to(self.device)
        self.full = lora is None  # a fully fine-tuned policy: weights arrive whole
        if self.full:
            self.model = base
        else:
            from peft import LoraConfig, get_peft_model

            # B = 0 until the first adapter arrives: the policy starts as the base model
            self.model = get_peft_model(base, _lora_config(lora) if lora else LoraConfig(r=8, target_modules="all-linear"))
        self.model.eval()
        self.version = -1
        self._eos_ids = self._eos_token_ids()
        self._offloaded = False  # asleep at level 1 on a GPU: the weights wait in host memory
        self._discarded: dict[str, tuple] = {}  # asleep at level 2: each freed weight's (shape, dtype)
        self._unloaded: set[str] = set()  # woken from level 2: weights not written by a load since
        self._sleeps = 0

    def _eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    # -- sleep (colocated with learners) ---------------------------------------------------------
    def sleep(self, level: int) -> None:
        """Level 1 moves the weights to host memory (on CPU they are there already); level 2 frees them,
        keeping their shapes, until the next full-weight load writes them again."""
        import torch

        if self._offloaded or self._discarded:
            return
        self._sleeps += 1
        if level >= 2:
            if not self.full:
                raise ValueError("sleep level 2 discards the base weights, which a LoRA policy keeps using; use level 1")
            for name, p in self.model.named_parameters():
                self._discarded[name] = (tuple(p.shape), p.dtype)
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        elif self.device != "cpu":
            self.model.to("cpu")
            self._offloaded = True
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _wake(self, *, for_weights: bool) -> None:
        import torch

        if self._offloaded:
            self.model.to(self.device)
            self._offloaded = False
        if self._discarded:
            if not for_weights:
                raise RuntimeError("the engine slept at level 2, which discarded its weights, and is asked to sample "
                                   "before new weights were loaded")
            for name, p in self.model.named_parameters():
                if name in self._discarded:
                    shape, dtype = self._discarded[name]
                    p.data = torch.empty(shape, dtype=dtype, device=self.device)
            self._unloaded, self._discarded = set(self._discarded), {}
        if not for_weights and self._unloaded:
            missing = sorted(self._unloaded)
            raise RuntimeError(f"{len(missing)} weights discarded by sleep level 2 were not loaded again before "
                               f"sampling (e.g. {missing[0]}); the weight sync must send every weight")

    def info(self) -> dict[str, Any]:
        """``sleeps``: how many times the engine slept (colocated with a learner)."""
        return {"sleeps": self._sleeps}

    def apply_lora(self, adapter: LoraAdapter) -> None:
        from peft import get_peft_model, set_peft_model_state_dict

        self._wake(for_weights=True)

        if self.full:
            raise ValueError("this engine holds a fully fine-tuned policy; it takes full weights, not a LoRA adapter")
        wanted = _lora_config(adapter.peft_config)
        current = self.model.peft_config["default"]
        if (wanted.r, wanted.lora_alpha, sorted(wanted.target_modules or [])) != (
            current.r, current.lora_alpha, sorted(current.target_modules or [])
        ):
            self.model = get_peft_model(self.model.unload(), wanted).eval()
        set_peft_model_state_dict(self.model, adapter.tensors)

    def load_weights(self, buckets: Iterable[Mapping[str, Any]]) -> None:
        import torch

        self._wake(for_weights=True)
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in ((n, t) for bucket in buckets for n, t in bucket.items()):
                if name not in params:
                    raise KeyError(f"full-weight update names {name!r}, which this model does not have")
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
                self._unloaded.discard(name)

    def generate(self, request: GenerationRequest, progress: bool = False) -> RolloutBatch:
        import torch

        s = request.sampling
        self._wake(for_weights=False)
        prompt_ids = encode_prompts(self.tokenizer, request.prompts)
        seeds = request.seeds or per_prompt_seeds(s.seed, len(prompt_ids))
        comp_ids, texts, logprobs, reasons = [], [], [], []
        start = time.perf_counter()
        for ids, seed in zip(prompt_ids, seeds):
            if seed is not None:
                torch.manual_seed(seed)
            out = self._sample_group(ids, s)
            for tokens, lps, reason in out:
                comp_ids.append(tokens)
                logprobs.append(lps)
                reasons.append(reason)
                texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        elapsed = time.perf_counter() - start
        return RolloutBatch(
            prompt_ids=prompt_ids, completion_ids=comp_ids, completion_texts=texts, sampling_logprobs=logprobs,
            finish_reasons=reasons, group_size=s.n, policy_version=self.version,
            stats={"generate_s": elapsed, "completion_tokens": float(sum(map(len, comp_ids)))},
        )

    def sample_turn_batch(self, sampling, turns):
        """One reply per turn, each under its own seed (transformers' generate, one turn at a time)."""
        from dataclasses import replace

        import torch

        from grpo_ray.rollout.engines.turns import TurnOutput

        self._wake(for_weights=False)
        out = []
        for turn in turns:
            if turn.seed is not None:
                torch.manual_seed(turn.seed)
            (tokens, lps, reason), = self._sample_group(turn.prompt_ids, replace(sampling, n=1, max_tokens=turn.max_tokens))
            out.append(TurnOutput(turn.key, tokens, lps, reason))
        return out

    def _sample_group(self, ids: list[int], s) -> list[tuple[list[int], list[float], str]]:
        import torch

        input_ids = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            out = self._generate(input_ids, s)
        new = out.sequences[:, input_ids.shape[1]:]  # [G, T]
        # scores are the processed (temperature/top-p) logits the tokens were drawn from
        step_logprobs = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.scores], dim=1)  # [G, T, V]
        chosen = step_logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [G, T]
        # tokens up to and including the first EOS; generate pads finished rows with EOS/pad after it
        mask = completion_mask_from_eos(new, sorted(self._eos_ids)) if self._eos_ids else torch.ones_like(new)
        lengths, has_eos = mask.sum(dim=1).tolist(), torch.isin(new, torch.tensor(sorted(self._eos_ids) or [-1],
                                                                                    device=new.device)).any(dim=1).tolist()
        return [(row[:n], lp[:n], "stop" if eos else "length")
                for row, lp, n, eos in zip(new.tolist(), chosen.tolist(), lengths, has_eos)]

    def _generate(self, input_ids, s):
        import torch

        # temperature 0 means greedy, as in vLLM; transformers wants do_sample=False for that
        sampling = (
            dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=(s.top_k if s.top_k > 0 else 0))
            if s.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        )
        return self.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=s.max_tokens,
            num_return_sequences=s.n, output_scores=True, return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id, **sampling,
        )


def _lora_config(peft_config: dict[str, Any]):
    from peft import LoraConfig

    return LoraConfig(**{k: v for k, v in peft_config.items() if k in LoraConfig.__dataclass_fields__})
