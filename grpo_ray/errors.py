"""Errors that cross from an actor or the library to the command line.

``UserError``: something the user can fix; the CLI prints it as one line and exits 2 (no traceback).
``NonFiniteUpdate``: a learner refused an update whose loss or gradient was not finite; the run stops.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a missing path, an unreachable dataset): str() is the one line."""


class NonFiniteUpdate(RuntimeError):
    """A learner's loss or gradient norm was nan or inf at an optimizer step, so the step was not applied:
    the weights and optimizer state are the ones before it. str() is one line saying which and where."""


def cause_of(err: BaseException) -> BaseException:
    """The exception an actor raised, for one raised again by ``ray.get`` (a ``RayTaskError`` wrapping it)."""
    return getattr(err, "cause", None) or err
