"""The ``grpo-ray`` command line: one module per command, each thin over the packages it drives."""

from grpo_ray.cli.main import main

__all__ = ["main"]
