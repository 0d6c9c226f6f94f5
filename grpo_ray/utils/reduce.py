"""Joining the same named metric from several places (micro-batches, learner ranks, rollout workers)
by what it is, not by averaging everything.

The kind comes from the name, one rule for the whole project:

- ``.../max`` or ``..._max``: the max of the maxima;
- ``.../min`` or ``..._min``: the min of the minima;
- wall times (``timing/...``, ``..._s``, ``..._seconds``): the slowest part, since parts run side by side;
- counts and sums (``num_tokens``, ``..._tokens``, ``.../count``, ``..._resent``, ``loss``): the sum
  (a learner reports ``loss`` as its share of the global loss, see ``grpo_ray.learner.policy``);
- anything else is a mean, weighted when weights are given (e.g. tokens per micro-batch or per rank).

>>> reduce_named([{"ratio/max": 1.5, "kl": 0.1, "num_tokens": 10.0}, {"ratio/max": 2.0, "kl": 0.3, "num_tokens": 30.0}],
...              weights=[10.0, 30.0])
{'ratio/max': 2.0, 'kl': 0.25, 'num_tokens': 40.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

_SUMS = ("num_tokens", "_tokens", "/count", "_count", "_resent")


def reduction(name: str) -> str:
    """``"max"``, ``"min"``, ``"sum"`` or ``"mean"`` for a metric called ``name``."""
    if name.endswith(("/max", "_max")):
        return "max"
    if name.endswith(("/min", "_min")):
        return "min"
    if name.startswith("timing/") or name.endswith(("_s", "_seconds")):
        return "max"
    if name == "loss" or name.endswith(_SUMS):
        return "sum"
    return "mean"


def reduce_values(name: str, values: Sequence[float], weights: Optional[Sequence[float]] = None) -> float:
    """One value for ``name`` from ``values`` (NaNs ignored; NaN when nothing is left)."""
    pairs = [(float(v), 1.0 if weights is None else float(w)) for v, w in zip(values, weights or [None] * len(values))
             if v is not None and not math.isnan(float(v))]
    if not pairs:
        return math.nan
    kind = reduction(name)
    if kind == "max":
        return max(v for v, _ in pairs)
    if kind == "min":
        return min(v for v, _ in pairs)
    if kind == "sum":
        return sum(v for v, _ in pairs)
    total = sum(w for _, w in pairs)
    if total <= 0:  # e.g. every part had no tokens: fall back to the plain mean
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / total


def reduce_named(parts: Sequence[Mapping[str, float]], weights: Optional[Sequence[float]] = None) -> dict[str, float]:
    """Every key of ``parts`` joined by :func:`reduce_values` (a key missing from a part is skipped there)."""
    keys = list(dict.fromkeys(k for p in parts for k in p))
    out = {}
    for key in keys:
        present = [(p[key], None if weights is None else weights[i]) for i, p in enumerate(parts) if key in p]
        out[key] = reduce_values(key, [v for v, _ in present], None if weights is None else [w for _, w in present])
    return out
