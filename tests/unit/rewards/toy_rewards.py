"""Reward functions for the scorer's tests, in a module that imports nothing heavy.

Functions defined at module level travel to reward processes by reference, so the child imports
this module: keeping it light keeps a child's start at a fraction of a second.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def exact_reward(prompts, completions, answer, **kwargs):
    return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]


def broken_reward(prompts, completions, **kwargs):
    raise ZeroDivisionError("division by zero\nsecond line")


def sleepy_reward(prompts, completions, seconds=0.5, value=1.0, **kwargs):
    time.sleep(seconds)
    return [value] * len(completions)


def busy_reward(prompts, completions, seconds=3.0, **kwargs):
    """Spins a core for ``seconds`` (bounded, so a thread that cannot be stopped stops by itself)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return [1.0] * len(completions)


def is_thinking_reward(prompts, completions, tag_style="reasoning"):
    return [1.0 if tag_style == "thinking" else 0.0] * len(completions)


def exiting_reward(prompts, completions, **kwargs):
    os._exit(3)


def chatty_reward(prompts, completions, **kwargs):
    print("a reward that prints to stdout", flush=True)
    return [0.5] * len(completions)


def pid_reward(prompts, completions, **kwargs):
    return [float(os.getpid())] * len(completions)


def warm_reward(prompts, completions, log_path, load_s=0.0, **kwargs):
    """1.0 once warmed up in this process; its warm-up sleeps ``load_s`` (a model load) and logs a line."""
    return [1.0 if _WARM.get(log_path) else 0.0] * len(completions)


_WARM: dict[str, bool] = {}


def _warm(log_path, load_s=0.0):
    time.sleep(load_s)
    with Path(log_path).open("a") as f:
        f.write(f"{os.getpid()}\n")
    _WARM[log_path] = True


warm_reward.warmup = _warm


def failing_warm_reward(prompts, completions, **kwargs):
    return [1.0] * len(completions)


def _failing_warmup(**kwargs):
    raise FileNotFoundError("no model at /nowhere")


failing_warm_reward.warmup = _failing_warmup
