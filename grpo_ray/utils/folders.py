"""Folders made once per node and shared: a converted or NF4-rounded model that several processes on a
node (actors, test workers) may ask for at the same moment.

One process builds while the others wait on a file lock beside the folder, then reuse what it made.
The build writes into a temporary sibling folder that is renamed into place once complete, so a folder
under the final name is always whole; a build that fails or dies leaves only its temporary folder,
which is removed (by itself, or by the next builder's clean-up of its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (made if absent) against every other process and thread
    that opens it: ``flock`` locks belong to the open file, not the process."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None], *, is_complete: Callable[[Path], bool]) -> Path:
    """``final``, made by ``build(tmp)`` (which fills the empty folder ``tmp``) unless ``is_complete(final)``
    already holds. One builder at a time per ``final``: the lock is ``.<name>.lock`` beside it. A folder
    under the final name that is not complete (copied by hand, an older layout) is made again."""
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(final.parent / f".{final.name}.lock"):
        if is_complete(final):  # another process made it while this one waited
            return final
        if final.exists():
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build(tmp)
            _make_readable(tmp)
            _publish(tmp, final, is_complete)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _publish(tmp: Path, final: Path, is_complete: Callable[[Path], bool]) -> None:
    """Rename ``tmp`` to ``final``; where the lock does not hold (some network filesystems) and another
    process got there first, its complete folder is kept and ``tmp`` is discarded."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_complete(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    # mkdtemp makes the folder private (0700) and safetensors may write 0600 files; a shared cache
    # should be as readable as any other download
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)
