"""The learner's chunked logprobs on the built-in model: the LM head applied a few positions at a time to
the decoder's hidden states gives the whole logits' logprobs, entropies and parameter gradients, with a
chunk that does not divide T, through a PEFT LoRA wrapper, on the shared-prompt path, with Gemma's
final-logit soft-capping, and for the reference policy and the ``logprobs`` inspection method."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.config import AlgoConfig, LearnerConfig
from grpo_ray.learner.forward import completion_logprobs
from grpo_ray.learner.padding import pad_rows

from .helpers import bare_learner, load_tiny_model

pytestmark = pytest.mark.unit

TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def base():
    return load_tiny_model()


@pytest.fixture(scope="module")
def lora():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)  # init_lora_weights=False: B is random too, so the adapter changes the logits
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    return get_peft_model(load_tiny_model(), config)


@pytest.fixture(scope="module")
def rows():
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (7, 9)]  # uneven: left padding
    completions = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (4, 6, 2, 5, 6, 3)]  # T = 6
    return [p for p in prompts for _ in range(3)], completions


def _run(model, batch, **kwargs):
    """(logprobs, entropy, gradient of the masked logprob sum) of one forward/backward."""
    model.zero_grad()
    lp, entropy = completion_logprobs(model, model, batch, temperature=TEMPERATURE, with_entropy=True, **kwargs)
    (lp * batch.completion_mask).sum().backward()
    return lp.detach(), entropy, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, mask) -> None:
    (lp_a, ent_a, grads_a), (lp_b, ent_b, grads_b) = a, b
    mask = mask.bool()
    torch.testing.assert_close(lp_b[mask], lp_a[mask], rtol=0, atol=2e-5)
    torch.testing.assert_close(ent_b[mask], ent_a[mask], rtol=0, atol=2e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        scale = float(grad.abs().max()) + 1e-12
        assert float((grads_b[name] - grad).abs().max()) / scale < 1e-4, name


@pytest.mark.parametrize("share_prefix", [False, True], ids=["full", "shared_prefix"])
@pytest.mark.parametrize("chunk_size", [1, 4])  # 4 does not divide T = 6
@pytest.mark.parametrize("wrapped", ["plain", "lora"])
def test_chunked_equals_the_whole_logits(request, rows, wrapped, chunk_size, share_prefix):
    model = request.getfixturevalue("base" if wrapped == "plain" else "lora")
    batch = pad_rows(*rows, 0)
    whole = _run(model, batch, chunk_size=0, share_prefix=False)
    chunked = _run(model, batch, chunk_size=chunk_size, share_prefix=share_prefix)
    _assert_same(whole, chunked, batch.completion_mask)
    if wrapped == "lora":
        assert all("lora_" in name for name in whole[2])  # only the adapter trains


def test_soft_capping_as_gemma_applies_it(base, rows, monkeypatch):
    """cap * tanh(logits / cap) after the head, before the temperature: by hand from the decoder's hidden
    states, and the gradients do not depend on the chunking."""
    batch = pad_rows(*rows, 0)
    width = batch.completion_ids.shape[1]
    with torch.no_grad():
        plain, _ = completion_logprobs(base, base, batch, temperature=TEMPERATURE, chunk_size=4, with_entropy=False,
                                       share_prefix=False)
    monkeypatch.setattr(base.config, "final_logit_softcapping", 1.5, raising=False)
    capped = _run(base, batch, chunk_size=4, share_prefix=False)
    with torch.no_grad():
        hidden = base.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids).last_hidden_state[:, -(width + 1):-1]
        logits = torch.tanh(base.lm_head(hidden) / 1.5) * 1.5 / TEMPERATURE
        expected = logits.log_softmax(-1).gather(-1, batch.completion_ids[..., None])[..., 0]
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(capped[0][mask], expected[mask], rtol=0, atol=2e-5)
    assert float((capped[0] - plain)[mask].abs().max()) > 0.1  # the cap did change them
    _assert_same(capped, _run(base, batch, chunk_size=100, share_prefix=True), batch.completion_mask)


def _learner(model, chunk_size: int, *, lora: bool):
    return bare_learner(model, LearnerConfig(logprob_chunk_size=chunk_size), AlgoConfig(), rows=8, lora=lora)


def test_the_reference_policy_and_the_inspection_method(base, lora, rows):
    """``PolicyLearner.logprobs`` (temperature 1) gives the whole logits' values, for the policy and for
    the reference: with LoRA the adapter disabled, under full fine-tuning a frozen model of its own."""
    prompts, completions = rows
    for model, is_lora in ((lora, True), (base, False)):
        chunked, whole = _learner(model, 2, lora=is_lora), _learner(model, 0, lora=is_lora)
        if not is_lora:
            chunked.reference = whole.reference = load_tiny_model()
            with torch.no_grad():
                chunked.reference.lm_head.weight.mul_(0.5)  # a reference that differs from the policy
        for reference in (False, True):
            got = chunked.logprobs(prompts, completions, reference=reference)
            want = whole.logprobs(prompts, completions, reference=reference)
            assert [len(r) for r in got] == [len(c) for c in completions]
            for g, w in zip(got, want):
                assert g == pytest.approx(w, abs=2e-5)
        policy, reference = (chunked.logprobs(prompts, completions, reference=r)[0] for r in (False, True))
        assert max(abs(a - b) for a, b in zip(policy, reference)) > 1e-3  # the reference is another policy
