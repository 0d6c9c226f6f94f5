"""The learner's forward passes: the logprobs (and entropies) of a micro-batch's completion tokens.

Two ways, the same values: from the whole logits [rows, T, vocab] (``chunk_size=0``), or from the
decoder's hidden states with the LM head applied a chunk of positions at a time
(``grpo_ray.algo.chunked_logprobs``), so that float32 logits exist for one chunk only, forward and
backward. Either way each distinct prompt can run once for the rows that share it
(``share_prefix``): its KV cache, with its autograd graph, is indexed out to those rows, so gradients
through the prompt add up over the group exactly as in the full forward, and G completions of one
prompt cost one prompt pass instead of G.

For the chunked way the model is still called as a whole, through whatever wraps it (the DeepSpeed
engine, PEFT), and the chunked head runs *inside* that call, from a forward hook on the causal LM that
turns its output into ``{"logprobs", "entropy"}``. Two things depend on it:

- DeepSpeed starts its backward bookkeeping (ZeRO's gradient-reduction state, the accumulation
  boundary) from hooks on the tensors the engine's forward returns. Those must be the logprobs:
  were the head applied after the engine call, its weight's gradient (full fine-tuning) would reach
  ZeRO before that bookkeeping had started.
- ZeRO-3 gathers a module's weights in hooks around each of its calls, so the head is called as the
  module it is (``get_output_embeddings()``), once per chunk, and again per chunk when backward
  recomputes it.

The causal LM's own head then runs on one position only (``logits_to_keep=1``), whose logits are
dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from grpo_ray.algo import chunked_logprobs, entropy_from_logits, selective_log_softmax
from grpo_ray.learner.padding import PaddedBatch, unique_prompts


def output_head(model) -> tuple[torch.nn.Module, float | None]:
    """The causal LM's head module (through a PEFT wrapper: LoRA on the head included) and its final-logit
    soft-cap (Gemma 2's ``final_logit_softcapping``, applied in its forward after the head; None elsewhere)."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return model.get_output_embeddings(), getattr(text, "final_logit_softcapping", None)


@contextmanager
def _returning(model, finish: Callable[[Tensor, Any], dict[str, Any]]) -> Iterator[None]:
    """Within it, a call of ``model`` returns ``finish(hidden, output)`` instead of ``output``: hidden is
    the decoder's last hidden states [n, S, H], after the final norm. The hook goes first (``prepend``),
    so it runs before any hook of DeepSpeed's on the same module, while the call is still a forward."""
    captured: list[Tensor] = []
    keep = model.get_decoder().register_forward_hook(lambda _m, _args, out: captured.append(out[0]))
    swap = model.register_forward_hook(lambda _m, _args, out: finish(captured.pop(), out), prepend=True)
    try:
        yield
    finally:
        keep.remove()
        swap.remove()


def completion_logprobs(call, model, mb: PaddedBatch, *, temperature: float, chunk_size: int, with_entropy: bool,
                        share_prefix: bool, num_chunks: int | None = None) -> tuple[Tensor, Tensor | None]:
    """[n, T] logprobs of the completion tokens at ``temperature`` and their entropies (None unless
    ``with_entropy``), ``chunk_size`` positions at a time (0: all at once).

    ``call`` runs the model (the DeepSpeed engine, or the model itself); ``model`` is the module it
    calls (the PEFT or plain causal LM). ``share_prefix``: run each distinct prompt once.
    ``num_chunks``: see ``chunked_logprobs``.
    """
    if not chunk_size:
        logits = completion_logits(call, mb, share_prefix).float() / temperature
        entropy = entropy_from_logits(logits.detach()) if with_entropy else None
        return selective_log_softmax(logits, mb.completion_ids), entropy
    head, softcap = output_head(model)

    def finish(hidden: Tensor) -> dict[str, Any]:  # [n, T, H]: position t predicts completion token t
        logprobs, entropy = chunked_logprobs(
            hidden, mb.completion_ids, head, chunk_size=chunk_size, temperature=temperature, softcap=softcap,
            with_entropy=with_entropy, num_chunks=num_chunks,
        )
        return {"logprobs": logprobs, "entropy": entropy}

    if share_prefix:
        out = _shared_prefix(call, model, mb, finish)
    else:
        width_c = mb.completion_ids.shape[1]
        with _returning(model, lambda hidden, _out: finish(hidden[:, -(width_c + 1):-1])):
            out = call(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
                       use_cache=False, logits_to_keep=1)
    return out["logprobs"], out["entropy"]


def completion_logits(call, mb: PaddedBatch, share_prefix: bool) -> Tensor:
    """[n, T, V] logits that predict each completion token (in the model's dtype)."""
    if share_prefix:
        return shared_prefix_logits(call, mb)
    out = call(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
               use_cache=False, logits_to_keep=mb.completion_ids.shape[1] + 1)
    return out.logits[:, :-1, :]  # position t predicts token t+1


def shared_prefix_logits(call, mb: PaddedBatch) -> Tensor:
    """:func:`completion_logits`, running each distinct prompt once."""
    first, inverse = unique_prompts(mb)
    p = mb.prompt_width
    prompt = call(input_ids=mb.input_ids[first, :p], attention_mask=mb.attention_mask[first, :p],
                  position_ids=mb.position_ids[first, :p], use_cache=True, logits_to_keep=1)
    cache = prompt.past_key_values
    cache.batch_select_indices(inverse)
    rest = call(input_ids=mb.input_ids[:, p:-1], attention_mask=mb.attention_mask[:, :-1],
                position_ids=mb.position_ids[:, p:-1], past_key_values=cache, use_cache=True)
    return torch.cat([prompt.logits[inverse, -1:, :], rest.logits], dim=1)


def _shared_prefix(call, model, mb: PaddedBatch, finish) -> dict[str, Any]:
    """The chunked way's :func:`shared_prefix_logits`: the prompt's last hidden state predicts the first
    completion token."""
    first, inverse = unique_prompts(mb)
    p = mb.prompt_width
    with _returning(model, lambda hidden, out: {"last": hidden[:, -1:], "cache": out.past_key_values}):
        prompt = call(input_ids=mb.input_ids[first, :p], attention_mask=mb.attention_mask[first, :p],
                      position_ids=mb.position_ids[first, :p], use_cache=True, logits_to_keep=1)
    cache = prompt["cache"]
    cache.batch_select_indices(inverse)
    last = prompt["last"][inverse]
    with _returning(model, lambda hidden, _out: finish(torch.cat([last, hidden], dim=1))):
        return call(input_ids=mb.input_ids[:, p:-1], attention_mask=mb.attention_mask[:, :-1],
                    position_ids=mb.position_ids[:, p:-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
