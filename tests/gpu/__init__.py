"""GPU smoke tests (pytest -m gpu): skipped where there is no CUDA device."""
