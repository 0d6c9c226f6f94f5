"""What every metric sink shares: the interface, the registry, JSON-safe values and completion tables."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, TextIO

from grpo_ray.config import ConfigError
from grpo_ray.utils.registry import Registry

Row = Mapping[str, Any]


@dataclass(frozen=True)
class SinkContext:
    """What a sink is built from.

    ``start_step`` is the last step already logged (0 for a fresh run, k when resuming after step
    k): sinks that keep files drop what they hold for later steps, so each step appears once.
    ``fresh``: a new run in this output dir, whose files drop everything an earlier run left there
    (its step-0 evaluation too).
    """

    output_dir: Path
    total_steps: int
    start_step: int = 0
    run_config: Optional[dict[str, Any]] = None
    stream: Optional[TextIO] = field(default=None, compare=False)  # console only; None is sys.stderr
    fresh: bool = False


class MetricSink:
    """One destination for metrics. Subclasses override what they support; the rest do nothing."""

    def __init__(self, ctx: SinkContext) -> None:
        self.ctx = ctx

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One step's metrics: names to Python numbers (NaN allowed)."""

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        """A table of sample completions; see ``MetricLogger.log_completions`` for the columns."""

    def resume_from(self, step: int) -> None:
        """Forget everything logged for steps after ``step``; the next ``log`` is step + 1."""

    def close(self) -> None:
        """Flush and release files and runs. Called once."""


SINKS: Registry[type[MetricSink]] = Registry("metric sink")


def import_optional(module: str, sink: str, pip_name: Optional[str] = None) -> ModuleType:
    """Import the package a sink needs, or raise a one-line ``ConfigError`` saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pip_name = pip_name or module
        raise ConfigError(
            f"trainer.sinks includes {sink!r} but {pip_name!r} is not installed ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else module}); pip install {pip_name}, or remove {sink!r} "
            "from trainer.sinks"
        ) from None


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON null) and numpy/torch scalars as Python ones."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError, RuntimeError):  # a multi-element array: fall through to str
            pass
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Completion tables ---------------------------------------------------------------------------------
TEXT_COLUMNS = ("prompt", "completion", "answer")


def table_columns(rows: Sequence[Row]) -> list[str]:
    """prompt, completion, answer, reward, then the other keys (rewards/<fn>, ...) in first-seen order."""
    leading = [c for c in (*TEXT_COLUMNS, "reward") if any(c in r for r in rows)]
    rest = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in leading]
    return leading + rest


def format_cell(value: Any) -> str:
    if is_number(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)
    if value is None:
        return ""
    if isinstance(value, list) and value and isinstance(value[-1], Mapping):  # chat messages
        value = value[-1].get("content", value)
    return str(value)


def clip(text: str, width: int) -> str:
    """Whitespace collapsed to single spaces, cut to ``width`` characters with '...' when longer."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def markdown_table(rows: Sequence[Row], max_chars: int = 2000) -> str:
    """A Markdown table (TensorBoard's text plugin renders it); newlines kept as <br>."""
    columns = table_columns(rows)

    def cell(value: Any) -> str:
        text = format_cell(value)
        text = text if len(text) <= max_chars else text[: max_chars - 3] + "..."
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Row], widths: Mapping[str, int], default_width: int = 8) -> str:
    """A fixed-width plain-text table for terminals; long texts clipped to their column's width."""
    columns = table_columns(rows)
    headers = {c: c.removeprefix("rewards/") for c in columns}
    sizes = {c: widths.get(c, max(default_width, len(headers[c]))) for c in columns}
    sizes = {c: min(sizes[c], max(len(headers[c]), *(len(clip(format_cell(r.get(c)), sizes[c])) for r in rows)))
             for c in columns}

    def line(cells: Mapping[str, str]) -> str:
        return "  ".join(clip(cells[c], sizes[c]).ljust(sizes[c]) for c in columns).rstrip()

    out = [line(headers), "  ".join("-" * sizes[c] for c in columns)]
    out += [line({c: format_cell(r.get(c)) for c in columns}) for r in rows]
    return "\n".join(out)
