"""Fixtures for the data tests: no network, and a throwaway ``datasets`` cache.

The hub is unreachable in CI, so offline mode is switched on before ``datasets`` is first imported
(a best effort: it only takes effect if no earlier test module imported it). Tables written to
``tmp_path`` would otherwise leave cache entries in ~/.cache/huggingface for every run.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets
import pytest


@pytest.fixture(scope="session", autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        # read at call time by load_dataset, so patching works even after import
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets"))
        yield


def user_turn(row: dict) -> str:
    """The user message of a prompt row."""
    (user,) = [m["content"] for m in row["prompt"] if m["role"] == "user"]
    return user


def system_turn(row: dict) -> str | None:
    """The system message of a prompt row, or None when there is none."""
    systems = [m["content"] for m in row["prompt"] if m["role"] == "system"]
    return systems[0] if systems else None
