"""Parity with TRL 1.16's GRPOTrainer on identical tensors.

``trl_compute_loss`` and ``trl_advantages`` below transcribe TRL 1.16.0 line for line (minus its
optional extras: entropy mask, vLLM IS correction, off-policy mask, and the division by
gradient-accumulation steps, which grpo_ray leaves to the learner). Sources:

- ``trl/trainer/grpo_trainer.py:3058-3059``  advantages [N] -> [N, 1]
- ``trl/trainer/grpo_trainer.py:3083-3095``  log ratio, token/sequence importance weights, coef_1
- ``trl/trainer/grpo_trainer.py:3098-3102``  k3 KL
- ``trl/trainer/grpo_trainer.py:3109-3111``  cispo: detached capped ratio * A * logp
- ``trl/trainer/grpo_trainer.py:3112-3120``  clipped surrogate, with ``delta`` two-sided clipping
- ``trl/trainer/grpo_trainer.py:3121-3124``  sapo: soft sigmoid gate
- ``trl/trainer/grpo_trainer.py:3149-3173``  + beta * KL, then grpo/sapo, bnpo, dr_grpo, cispo/dapo aggregation
- ``trl/trainer/grpo_trainer.py:3254-3286``  masked_seq_mean, global_masked_mean, clip and cispo metrics

TRL's loss types map onto two switches here: ``cispo`` is ``policy_objective="cispo"`` with
``loss_type="dapo"`` and TRL's ``epsilon_high`` as ``cispo_max_ratio``; ``sapo`` is
``policy_objective="sapo"`` with ``loss_type="grpo"``; the others are ``policy_objective="clip"``.
- ``trl/trainer/grpo_trainer.py:2759-2810``  reward combining, baseline, std scaling, NaN -> 0

TRL's helper functions (``nanstd``, ``selective_log_softmax``, ``entropy_from_logits`` in
``trl/trainer/utils.py``) are compared directly: importing ``trl.trainer.utils`` takes ~8 s (it pulls
in transformers), so the test compiles just those functions out of the installed source file. The
citation test checks the line numbers above still hold for the installed TRL when it is 1.16.0.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from grpo_ray.algo import (
    combine_rewards,
    compute_group_advantages,
    compute_policy_loss,
    entropy_from_logits,
    nanstd,
    selective_log_softmax,
)
from tests.unit.algo.helpers import random_batch

pytestmark = pytest.mark.unit

EPS_LOW, EPS_HIGH, MAX_LEN = 0.2, 0.28, 7


# ---- TRL 1.16.0, transcribed ----


def trl_compute_loss(
    per_token_logps,
    old_per_token_logps,
    ref_per_token_logps,
    advantages,
    mask,
    *,
    loss_type,
    importance_sampling_level,
    beta,
    num_items_in_batch,
    num_processes=1,
    current_gradient_accumulation_steps=1,
    steps_per_generation=1,
    epsilon_high=EPS_HIGH,
    delta=None,
    sapo_temperature_pos=1.0,
    sapo_temperature_neg=1.05,
):
    """GRPOTrainer._compute_loss, grpo_trainer.py:3058-3173 (see module docstring), one process."""
    mask = mask.to(per_token_logps.dtype)  # TRL's mask is an int tensor; float keeps clamp(min=1.0) exact
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    log_ratio = per_token_logps - old_per_token_logps
    if importance_sampling_level == "token":
        log_importance_weights = log_ratio
    elif importance_sampling_level == "sequence":
        log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_importance_weights = log_importance_weights.unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    if beta != 0.0:
        per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    if loss_type == "cispo":
        clamped_ratios = torch.clamp(coef_1, max=epsilon_high).detach()
        per_token_loss = -clamped_ratios * advantages * per_token_logps
    elif loss_type in ["grpo", "bnpo", "dr_grpo", "dapo"]:
        coef_2 = torch.clamp(coef_1, 1 - EPS_LOW, 1 + epsilon_high)
        if delta is not None:
            coef_1 = torch.clamp(coef_1, max=delta)
        per_token_loss1 = coef_1 * advantages
        per_token_loss2 = coef_2 * advantages
        per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    elif loss_type == "sapo":
        temperatures = torch.where(advantages > 0, sapo_temperature_pos, sapo_temperature_neg)
        soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures
        per_token_loss = -soft_coef_1 * advantages
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type in ["grpo", "sapo"]:
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * MAX_LEN)
    elif loss_type in ["cispo", "dapo"]:
        normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
        normalizer = normalizer * current_gradient_accumulation_steps / steps_per_generation
        loss = (per_token_loss * mask).sum() / normalizer

    def masked_seq_mean(x):
        if x.shape[1] == 1:
            return x.squeeze(1)
        return (x * mask).sum(-1) / mask.sum(-1)

    def global_masked_mean(x):  # accelerator.reduce over one process is the identity
        if x.shape[1] == 1:
            local_sum, local_count = x.sum(), torch.tensor(float(x.shape[0]))
        else:
            local_sum, local_count = (x * mask).sum(), mask.sum().float()
        return (local_sum / local_count.clamp(min=1.0)).item()

    def nan_reduce(x, fn):  # trl.trainer.utils.nanmin / nanmax
        finite = x[~torch.isnan(x)]
        return fn(finite).item() if finite.numel() else float("nan")

    metrics = {}
    if loss_type in ["grpo", "bnpo", "dr_grpo", "dapo"]:
        is_low_clipped = (coef_1 < 1 - EPS_LOW) & (advantages < 0)
        is_high_clipped = (coef_1 > 1 + epsilon_high) & (advantages > 0)
        is_region_clipped = is_low_clipped | is_high_clipped
        metrics = {
            "clip_ratio/low_mean": global_masked_mean(is_low_clipped.float()),
            "clip_ratio/high_mean": global_masked_mean(is_high_clipped.float()),
            "clip_ratio/region_mean": global_masked_mean(is_region_clipped.float()),
            "clip_ratio/low_min": nan_reduce(masked_seq_mean(is_low_clipped.float()), torch.min),
            "clip_ratio/high_max": nan_reduce(masked_seq_mean(is_high_clipped.float()), torch.max),
        }
    elif loss_type == "cispo":
        is_cispo_clipped = (coef_1 > epsilon_high) & (advantages > 0)
        metrics["cispo_clip_ratio"] = global_masked_mean(is_cispo_clipped.float())
    if beta != 0.0:
        metrics["kl"] = global_masked_mean(per_token_kl.detach())
    return loss, metrics


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", [0, 1])
def test_policy_loss_matches_trl(loss_type, level, beta, seed):
    batch = random_batch(seed=seed, num_sequences=6, num_tokens=7, empty_row=seed == 1)
    args = (batch.logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages, batch.completion_mask)
    expected, expected_metrics = trl_compute_loss(
        *args,
        loss_type=loss_type,
        importance_sampling_level=level,
        beta=beta,
        num_items_in_batch=batch.completion_mask.sum(),
    )
    loss, metrics = compute_policy_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.advantages,
        batch.completion_mask,
        loss_type=loss_type,
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        beta=beta,
        ref_logprobs=batch.ref_logprobs if beta else None,
        importance_sampling_level=level,
        max_completion_length=MAX_LEN,
    )
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    (expected_grad,) = torch.autograd.grad(expected, batch.logprobs)
    torch.testing.assert_close(grad, expected_grad)
    assert set(expected_metrics) <= set(metrics)
    for name, value in expected_metrics.items():
        assert metrics[name].item() == pytest.approx(value, nan_ok=True), name


# TRL loss_type -> (policy_objective, loss_type, TRL options, grpo_ray options). The cispo cap and delta
# sit inside the random batch's ratio range (~0.55 to ~1.8), so they bind on some tokens and not others.
NEWER_LOSSES = {
    "cispo": ("cispo", "dapo", {"epsilon_high": 1.3}, {"cispo_max_ratio": 1.3}),
    "sapo": ("sapo", "grpo", {}, {}),
    "sapo_temperatures": (
        "sapo", "grpo", {"sapo_temperature_pos": 0.6, "sapo_temperature_neg": 1.7},
        {"sapo_temperature_pos": 0.6, "sapo_temperature_neg": 1.7},
    ),
    "dapo_delta": ("clip", "dapo", {"delta": 1.4}, {"delta": 1.4}),
    "grpo_delta": ("clip", "grpo", {"delta": 1.4}, {"delta": 1.4}),
}


@pytest.mark.parametrize("case", sorted(NEWER_LOSSES))
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", [0, 1])
def test_newer_loss_types_match_trl(case, level, beta, seed):
    objective, loss_type, trl_options, options = NEWER_LOSSES[case]
    trl_loss_type = case.split("_")[0] if objective == "clip" else objective
    batch = random_batch(seed=seed, num_sequences=6, num_tokens=7, empty_row=seed == 1)
    args = (batch.logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages, batch.completion_mask)
    expected, expected_metrics = trl_compute_loss(
        *args,
        loss_type=trl_loss_type,
        importance_sampling_level=level,
        beta=beta,
        num_items_in_batch=batch.completion_mask.sum(),
        **trl_options,
    )
    loss, metrics = compute_policy_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.advantages,
        batch.completion_mask,
        loss_type=loss_type,
        policy_objective=objective,
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        beta=beta,
        ref_logprobs=batch.ref_logprobs if beta else None,
        importance_sampling_level=level,
        max_completion_length=MAX_LEN,
        **options,
    )
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    (expected_grad,) = torch.autograd.grad(expected, batch.logprobs)
    torch.testing.assert_close(grad, expected_grad)
    assert set(expected_metrics) <= set(metrics)
    for name, value in expected_metrics.items():
        assert metrics[name].item() == pytest.approx(value, nan_ok=True), name


@pytest.mark.parametrize("case", sorted(NEWER_LOSSES))
def test_newer_loss_types_differ_from_plain_clip(case):
    """The options bind on this batch: each newer loss is not the plain clipped loss in disguise."""
    objective, loss_type, _, options = NEWER_LOSSES[case]
    batch = random_batch(seed=0, num_sequences=6, num_tokens=7)
    common = {"loss_type": loss_type, "epsilon_low": EPS_LOW, "epsilon_high": EPS_HIGH}
    args = (batch.logprobs, batch.old_logprobs, batch.advantages, batch.completion_mask)
    plain, _ = compute_policy_loss(*args, **common)
    newer, _ = compute_policy_loss(*args, policy_objective=objective, **common, **options)
    (plain_grad,) = torch.autograd.grad(plain, batch.logprobs)
    (newer_grad,) = torch.autograd.grad(newer, batch.logprobs)
    assert not torch.allclose(plain_grad, newer_grad)


def test_dapo_normaliser_maps_to_trls_num_items_in_batch():
    """TRL divides by num_items_in_batch / num_processes * grad_accum / steps_per_generation: pass that."""
    batch = random_batch(seed=4, num_sequences=6, num_tokens=7)
    num_items_in_batch = torch.tensor(40.0)  # active tokens of the whole generation batch, all processes
    expected, _ = trl_compute_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.ref_logprobs,
        batch.advantages,
        batch.completion_mask,
        loss_type="dapo",
        importance_sampling_level="token",
        beta=0.0,
        num_items_in_batch=num_items_in_batch,
        num_processes=2,
        current_gradient_accumulation_steps=2,
        steps_per_generation=4,
    )
    loss, _ = compute_policy_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.advantages,
        batch.completion_mask,
        loss_type="dapo",
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        global_num_tokens=40.0 / 2 * 2 / 4,
    )
    torch.testing.assert_close(loss, expected)


def trl_advantages(rewards_per_func, reward_weights, num_generations, scale_rewards, trl_nanstd):
    """grpo_trainer.py:2759-2788 and 2810 (multi_objective_aggregation="sum_then_normalize")."""
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = trl_nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = trl_nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0), rewards


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("group_size", [2, 4])
def test_advantages_match_trl(scale, group_size, trl_utils):
    gen = torch.Generator().manual_seed(group_size)
    rewards_per_func = torch.randint(0, 3, (4 * group_size, 3), generator=gen).float()
    rewards_per_func[torch.rand(rewards_per_func.shape, generator=gen) < 0.3] = float("nan")
    rewards_per_func[1] = float("nan")  # an unscorable completion
    rewards_per_func[-group_size:, 0] = 1.0  # a group with equal rewards ...
    rewards_per_func[-group_size:, 1:] = float("nan")  # ... from one function only
    weights = torch.tensor([1.0, 0.5, 2.0])
    expected, expected_rewards = trl_advantages(rewards_per_func, weights, group_size, scale, trl_utils["nanstd"])
    rewards = combine_rewards(rewards_per_func, weights)
    torch.testing.assert_close(rewards, expected_rewards, equal_nan=True)
    torch.testing.assert_close(compute_group_advantages(rewards, group_size, scale), expected)


# ---- TRL's own helper functions, compiled from the installed source ----


def _trl_dir() -> Path:
    spec = importlib.util.find_spec("trl")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def trl_utils():
    """nanstd, selective_log_softmax, entropy_from_logits from trl/trainer/utils.py, Triton path off."""
    source = (_trl_dir() / "trainer" / "utils.py").read_text()
    wanted = {"nanstd", "selective_log_softmax", "entropy_from_logits"}
    nodes = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name in wanted]
    assert {node.name for node in nodes} == wanted, "TRL moved or renamed a helper this test compares with"
    namespace = {"torch": torch, "F": F, "is_triton_available": lambda: False}
    # Trusted source: the installed TRL package, compiled function by function to skip its slow imports.
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "trl/trainer/utils.py", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_nanstd_matches_trl(dim, trl_utils):
    values = torch.tensor([[1.0, float("nan"), 3.0, 0.5], [2.0, 2.0, float("nan"), float("nan")], [4.0] * 4])
    kwargs = {} if dim is None else {"dim": dim}
    torch.testing.assert_close(nanstd(values, **kwargs), trl_utils["nanstd"](values, **kwargs), equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_log_softmax_matches_trl(dtype, trl_utils):
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(3, 4, 13, generator=gen) * 4).to(dtype)
    index = torch.randint(0, 13, (3, 4), generator=gen)
    assert torch.equal(selective_log_softmax(logits, index), trl_utils["selective_log_softmax"](logits, index))


def test_entropy_matches_trl_and_stays_finite_where_trl_does_not(trl_utils):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 9, generator=gen)
    torch.testing.assert_close(entropy_from_logits(logits, 3), trl_utils["entropy_from_logits"](logits, 3))
    masked = torch.tensor([[0.0, 0.0, -math.inf]])
    assert torch.isnan(trl_utils["entropy_from_logits"](masked)).all()  # 0 * -inf in TRL
    assert entropy_from_logits(masked).item() == pytest.approx(math.log(2.0))


# ---- the cited TRL lines are where the docstrings say ----

CITED_LINES = {
    "trainer/grpo_trainer.py": {
        1881: "is_eos = torch.isin(completion_ids",
        1885: "completion_mask = (sequence_indices <= eos_idx.unsqueeze(1)).int()",
        2492: "completion_mask = completion_mask * (~is_truncated).unsqueeze(1).int()",
        2498: "num_items_in_batch = self.accelerator.gather(loss_mask.sum()).sum()",
        2759: "unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)",
        2763: "rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)",
        2770: "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
        2777: "std_rewards = nanstd(rewards).expand_as(rewards)",
        2787: "advantages = advantages / (std_rewards + 1e-4)",
        2788: "is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))",
        2810: "advantages = torch.nan_to_num(advantages, nan=0.0)",
        2824: "std_func_rewards = nanstd(rewards_per_func[:, i]).item()",
        3020: "def _compute_loss(self, model, inputs):",
        3087: "log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)",
        3095: "coef_1 = torch.exp(log_importance_weights)",
        3101: "torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1",
        3110: "clamped_ratios = torch.clamp(coef_1, max=self.epsilon_high).detach()",
        3111: "per_token_loss = -clamped_ratios * advantages * per_token_logps",
        3113: "coef_2 = torch.clamp(coef_1, 1 - self.epsilon_low, 1 + self.epsilon_high)",
        3116: "coef_1 = torch.clamp(coef_1, max=self.args.delta)",
        3120: "per_token_loss = -torch.min(per_token_loss1, per_token_loss2)",
        3122: "temperatures = torch.where(advantages > 0, self.args.sapo_temperature_pos, self.args.sapo_temperature_neg)",
        3123: "soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures",
        3124: "per_token_loss = -soft_coef_1 * advantages",
        3150: "per_token_loss = per_token_loss + self.beta * per_token_kl",
        3153: 'if self.loss_type in ["grpo", "sapo"]:',
        3154: "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()",
        3159: "loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)",
        3164: "loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * self.max_completion_length)",
        3168: 'elif self.loss_type in ["cispo", "dapo", "vespo"]:',
        3170: 'normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes',
        3173: "loss = (per_token_loss * mask).sum() / normalizer",
        3257: "return (x * mask).sum(-1) / mask.sum(-1)",
        3259: "def global_masked_mean(x):",
        3274: "is_low_clipped = (coef_1 < 1 - self.epsilon_low) & (advantages < 0)",
        3275: "is_high_clipped = (coef_1 > 1 + self.epsilon_high) & (advantages > 0)",
        3285: "is_cispo_clipped = (coef_1 > self.epsilon_high) & (advantages > 0)",
    },
    "trainer/utils.py": {
        538: "def selective_log_softmax(",
        585: "logsumexp_values = torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])",
        604: "def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 128) -> torch.Tensor:",
        1021: "def nanstd(",
        1043: "variance *= correction  # Bessel's correction",
    },
}


@pytest.mark.parametrize("relative_path", sorted(CITED_LINES))
def test_cited_trl_lines_are_where_the_docstrings_say(relative_path):
    trl_dir = _trl_dir()
    if importlib.metadata.version("trl") != "1.16.0":
        pytest.skip(f"citations are for trl 1.16.0, installed {importlib.metadata.version('trl')}")
    lines = (trl_dir / relative_path).read_text().splitlines()
    for number, snippet in CITED_LINES[relative_path].items():
        assert snippet in lines[number - 1], f"trl/{relative_path}:{number} is now {lines[number - 1].strip()!r}"
