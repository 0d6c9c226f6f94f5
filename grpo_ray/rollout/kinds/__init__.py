"""Rollout kinds: how a prompt becomes a trajectory (``base.py`` is the interface).

=============  ====================================================================
single_turn    one sampled reply per trajectory (the default)
=============  ====================================================================
"""

from grpo_ray.rollout.kinds.base import ROLLOUT_KINDS, KindSpec, RolloutKind, create_rollout_kind, kind_spec

__all__ = ["ROLLOUT_KINDS", "KindSpec", "RolloutKind", "create_rollout_kind", "kind_spec"]
