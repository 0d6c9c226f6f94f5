"""Shared pytest fixtures.

``shared_data`` points at the MIT-licensed GSM8K / PubMedQA copies that CI keeps in ../shared/data
beside the clone (override with GRPO_RAY_SHARED_DATA). Tests that need them skip, saying why, when
the folder is absent; everything else runs on data the project makes itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("GRPO_RAY_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (set GRPO_RAY_SHARED_DATA to point at them)")
    return path
