"""Folders built once per node (grpo_ray/utils/folders.py): racing builders make one, later calls reuse it,
and a failed build leaves nothing under the final name."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grpo_ray.utils.folders import build_once

pytestmark = pytest.mark.unit


def complete(folder: Path) -> bool:
    return (folder / "DONE").is_file()


class CountingBuild:
    """A slow build that counts its runs: a racer that did not wait would run it a second time."""

    def __init__(self) -> None:
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self, tmp: Path) -> None:
        with self._lock:
            self.runs += 1
        (tmp / "weights").write_text("w")
        time.sleep(0.3)
        (tmp / "DONE").write_text("")


def test_racing_builders_make_one_folder_and_later_calls_reuse_it(tmp_path) -> None:
    final, build = tmp_path / "cache" / "model-abc", CountingBuild()
    start = threading.Barrier(4)

    def race(_: int) -> Path:
        start.wait()
        return build_once(final, build, is_complete=complete)

    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(race, range(4)))
    assert folders == [final] * 4 and build.runs == 1
    assert (final / "weights").read_text() == "w"
    assert build_once(final, build, is_complete=complete) == final and build.runs == 1  # reused
    assert sorted(p.name for p in final.parent.iterdir()) == [".model-abc.lock", "model-abc"]  # no temporary left


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path) -> None:
    final = tmp_path / "model-abc"

    def broken(tmp: Path) -> None:
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(final, broken, is_complete=complete)
    assert [p.name for p in tmp_path.iterdir()] == [".model-abc.lock"]
    build = CountingBuild()
    assert build_once(final, build, is_complete=complete) == final and build.runs == 1


def test_an_incomplete_folder_under_the_final_name_is_made_again(tmp_path) -> None:
    final = tmp_path / "model-abc"
    final.mkdir()
    (final / "weights").write_text("copied by hand, half")
    build = CountingBuild()
    assert build_once(final, build, is_complete=complete) == final and build.runs == 1
    assert (final / "weights").read_text() == "w"
