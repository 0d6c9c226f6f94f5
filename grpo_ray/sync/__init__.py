"""Weight-sync strategies: how a new policy version goes from the learners to the rollout engines.

``strategies.WEIGHT_SYNCS`` maps a kind to a :class:`~grpo_ray.sync.strategies.WeightSync`, whose
``export`` runs on every learner rank (rank 0 returns the :class:`~grpo_ray.wire.WeightUpdate`) and
whose ``apply`` runs on each rollout worker. ``lora`` sends the adapter; ``full`` sends every weight
in buckets through the object store. The driver-side hand-off (which versions go to which workers,
queued behind the update) is ``grpo_ray.actors.sync``.
"""

from grpo_ray.sync.strategies import WEIGHT_SYNCS, WeightSync, sync_kind

__all__ = ["WEIGHT_SYNCS", "WeightSync", "sync_kind"]
