"""Without the hub, loading fails at once with one line that says how to use a local copy.

Each case runs in a fresh interpreter so that the environment (offline flag, endpoint, an empty
Hugging Face cache) is set before ``datasets`` and ``huggingface_hub`` read it at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]
MADE_UP = "grpo-ray-tests/no-such-dataset"
PROBE = """
import json, sys, time
from grpo_ray.data import DataSourceError, load_prompt_dataset
results = {}
for source in sys.argv[1:]:
    start = time.monotonic()
    try:
        load_prompt_dataset(source)
        results[source] = ["loaded", 0.0]
    except DataSourceError as err:
        results[source] = [str(err), time.monotonic() - start]
print(json.dumps(results))
"""


def run_probe(tmp_path: Path, env_updates: dict[str, str], *sources: str) -> dict[str, list]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    # an empty HF_HOME: no cached copy may rescue the load
    env.update(HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH=str(REPO_ROOT), **env_updates)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *sources],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_offline_hub_fails_fast_in_one_line(tmp_path: Path) -> None:
    results = run_probe(
        tmp_path,
        {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        "gsm8k",
        "pubmedqa",
        "medical-o1",
        MADE_UP,
    )
    for source, (message, seconds) in results.items():
        assert message != "loaded", source
        assert "\n" not in message, message
        assert message.startswith(f"{source}: cannot reach the Hugging Face hub (offline)"), message
        assert "data.source=" in message, message
        assert seconds < 5, f"{source} took {seconds:.1f}s to fail"
    assert "train.jsonl/test.jsonl" in results["gsm8k"][0]
    assert "ori_pqal.json" in results["pubmedqa"][0]


def test_unreachable_hub_fails_fast_without_offline_mode(tmp_path: Path) -> None:
    # Nothing listens on port 9 (discard) locally, so the connection is refused at once;
    # without the pre-check huggingface_hub would retry for ~25 s.
    results = run_probe(tmp_path, {"HF_ENDPOINT": "http://127.0.0.1:9"}, "gsm8k", MADE_UP)
    for source, (message, seconds) in results.items():
        assert "\n" not in message, message
        assert message.startswith(f"{source}: cannot reach the Hugging Face hub (127.0.0.1:9 unreachable"), message
        assert "HF_HUB_OFFLINE=1" in message
        assert seconds < 5, f"{source} took {seconds:.1f}s to fail"
