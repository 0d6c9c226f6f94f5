"""Pure-torch GRPO math: advantages, policy losses, KL estimators, masks and reward combining.

Functions take tensors and numbers, never config objects, and this package imports only torch, the
standard library and ``grpo_ray.utils.registry`` -- never ray, vllm, deepspeed or transformers -- so the
driver, the learner actors and the unit tests can all call it directly
(``tests/unit/algo/test_boundary.py`` keeps it that way).

Variants are chosen by name from registries, and an unknown name lists the known ones:

- ``ADVANTAGE_ESTIMATORS`` (grpo / rloo / reinforce_pp_baseline), each entry saying which
  ``ADVANTAGE_SCALES`` (group / batch / none) it takes; ``compute_advantages`` picks one;
- ``POLICY_OBJECTIVES`` (clip, with optional two-sided ``delta`` / cispo / sapo): each token's loss
  from its importance ratio and advantage;
- ``LOSS_AGGREGATIONS`` (grpo / bnpo / dr_grpo / dapo): per-token losses to one scalar, each entry
  saying whether it is ``split_invariant``;
- ``KL_ESTIMATORS`` (k1 / k2 / k3) and ``IMPORTANCE_SAMPLING_LEVELS`` (token / sequence).
"""

from grpo_ray.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    ADVANTAGE_SCALES,
    compute_advantages,
    compute_group_advantages,
    frac_reward_zero_std,
    zero_std_group_mask,
)
from grpo_ray.algo.aggregation import LOSS_AGGREGATIONS
from grpo_ray.algo.correction import truncated_importance_weights
from grpo_ray.algo.kl import KL_ESTIMATORS, compute_kl
from grpo_ray.algo.logprobs import chunked_logprobs, entropy_from_logits, selective_log_softmax
from grpo_ray.algo.losses import IMPORTANCE_SAMPLING_LEVELS, compute_policy_loss
from grpo_ray.algo.masks import completion_mask_from_eos, mask_truncated_completions, pad_completion_values
from grpo_ray.algo.objectives import POLICY_OBJECTIVES
from grpo_ray.algo.rewards import combine_rewards, reward_function_stats
from grpo_ray.algo.stats import masked_mean, nanstd

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ADVANTAGE_SCALES",
    "IMPORTANCE_SAMPLING_LEVELS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "POLICY_OBJECTIVES",
    "chunked_logprobs",
    "combine_rewards",
    "completion_mask_from_eos",
    "compute_advantages",
    "compute_group_advantages",
    "compute_kl",
    "compute_policy_loss",
    "entropy_from_logits",
    "frac_reward_zero_std",
    "mask_truncated_completions",
    "pad_completion_values",
    "masked_mean",
    "truncated_importance_weights",
    "nanstd",
    "reward_function_stats",
    "selective_log_softmax",
    "zero_std_group_mask",
]
