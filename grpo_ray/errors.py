"""User-facing errors: the CLI prints these as one line and exits 2 (no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a missing path, an unreachable dataset): str() is the one line."""
