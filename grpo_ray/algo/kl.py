"""Per-token estimators of KL(pi_theta || pi_ref) from samples of pi_theta.

The completions are sampled from the policy, so KL is estimated per sampled token from the log ratio
d = logprobs - ref_logprobs (Schulman 2020, "Approximating KL divergence",
http://joschu.net/blog/kl-approx.html). Chosen by name from ``KL_ESTIMATORS``:

- ``"k1"``: d. Unbiased but high variance, and negative on some tokens.
- ``"k2"``: d**2 / 2. Low variance, biased; as a loss on on-policy samples its expected gradient
  is that of KL(pi_theta || pi_ref).
- ``"k3"``: exp(-d) + d - 1 = exp(ref - logp) - (ref - logp) - 1. Unbiased, low variance and always
  >= 0: the estimator GRPO (Shao et al. 2024) and TRL 1.16 use
  (``trl/trainer/grpo_trainer.py:3100-3102``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from grpo_ray.utils.registry import Registry

# (logprobs [N, T], ref_logprobs [N, T]) -> per-token KL estimate [N, T]
KLEstimator = Callable[[Tensor, Tensor], Tensor]
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = logp - ref_logp, shapes [N, T] -> [N, T] (Schulman 2020)."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)**2 / 2, shapes [N, T] -> [N, T] (Schulman 2020)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1, shapes [N, T] -> [N, T] (Schulman 2020; used by GRPO)."""
    ref_minus_logp = ref_logprobs - logprobs
    return torch.exp(ref_minus_logp) - ref_minus_logp - 1


def compute_kl(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate [N, T] from ``logprobs`` and ``ref_logprobs`` [N, T].

    Raises:
        UnknownNameError: unknown ``estimator``; the message lists the known ones.
    """
    return KL_ESTIMATORS.get(estimator)(logprobs, ref_logprobs)
