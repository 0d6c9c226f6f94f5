"""Rollout generation with transformers ``generate`` and a PEFT adapter: the fallback engine.

For models or machines vLLM cannot serve. Slower than vLLM but the same interface and outputs:
token ids, text, the logprob of each sampled token after temperature, finish reasons. Each
prompt's group is drawn under its own seed, so results do not depend on batching.
"""

from __future__ import annotations

import time
from typing import Optional

from grpo_ray.rollout.adapters import AdapterPayload
from grpo_ray.rollout.prompting import encode_prompts, per_prompt_seeds
from grpo_ray.rollout.types import GenerationRequest, RolloutBatch


class HFEngine:
    """A transformers causal LM wrapped in PEFT; the adapter is swapped in memory."""

    def __init__(self, model_path: str, *, dtype: str = "auto", lora_config=None, device: Optional[str] = None,
                 trust_remote_code: bool = False, revision: Optional[str] = None) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32}.get(dtype, dtype)
        hub = dict(trust_remote_code=trust_remote_code, revision=revision)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, **hub)
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, **hub)
        # The adapter's shape comes with the first payload; until then a zero-effect default.
        self.model = get_peft_model(base, lora_config or LoraConfig(r=8, target_modules="all-linear"))
        self.model.to(self.device).eval()
        self.version = -1
        self._eos_ids = self._eos_token_ids()

    def _eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def load_adapter(self, payload: AdapterPayload) -> float:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        start = time.perf_counter()
        wanted = LoraConfig(**{k: v for k, v in payload.peft_config.items() if k in LoraConfig.__dataclass_fields__})
        current = self.model.peft_config["default"]
        if (wanted.r, wanted.lora_alpha, sorted(wanted.target_modules or [])) != (
            current.r, current.lora_alpha, sorted(current.target_modules or [])
        ):
            self.model = get_peft_model(self.model.unload(), wanted).to(self.device).eval()
        set_peft_model_state_dict(self.model, payload.tensors)
        self.version = payload.version
        return time.perf_counter() - start

    def generate(self, request: GenerationRequest) -> RolloutBatch:
        import torch

        s = request.sampling
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

    def _sample_group(self, ids: list[int], s) -> list[tuple[list[int], list[float], str]]:
        import torch

        input_ids = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            out = self._generate(input_ids, s)
        new = out.sequences[:, input_ids.shape[1]:]  # [G, T]
        # scores are the processed (temperature/top-p) logits the tokens were drawn from
        step_logprobs = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.scores], dim=1)  # [G, T, V]
        chosen = step_logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [G, T]
        result = []
        for row, lp in zip(new.tolist(), chosen.tolist()):
            end = next((i + 1 for i, t in enumerate(row) if t in self._eos_ids), None)
            if end is None:
                result.append((row, lp, "length"))
            else:
                result.append((row[:end], lp[:end], "stop"))
        return result

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

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[list[float]]:
        """Logprob of each completion token under the current adapter (temperature 1)."""
        import torch

        result = []
        with torch.no_grad():
            for p, c in zip(prompt_ids, completion_ids):
                ids = torch.tensor([p + c], device=self.device)
                logits = self.model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
                lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c, device=self.device)[:, None])
                result.append(lp.squeeze(-1).tolist())
        return result
