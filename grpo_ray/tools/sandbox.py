"""The built-in ``python`` tool: a program run in a sandbox built from Linux namespaces and rlimits.

Each call starts ``python3 -I -S`` (the system interpreter, isolated mode, no site packages) inside:

- new network, mount, PID, IPC and UTS namespaces (``unshare``): no network at all, no view of other
  processes, and every process of the call dies with it;
- a private root (``chroot``) holding only read-only bind mounts of ``/usr``, ``/bin``, ``/lib*`` and
  ``/etc`` plus an empty 16 MB ``/tmp`` as the working directory: the run's files are not there;
- an unprivileged user with no capabilities (``setpriv``);
- rlimits (``prlimit``) on memory, CPU seconds, file size, open files and processes, and a wall-clock
  limit (``timeout``), after which the whole tree is killed.

Namespaces need root or unprivileged user namespaces. :func:`sandbox_level` probes once which of those
this machine allows; where neither works the tool refuses to run code (it never falls back to running
it unconfined) and says so in its answer.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

OUTPUT_LIMIT = 4000  # characters of stdout + stderr handed back to the model

# Inside the new namespaces, as root of the mount namespace: build the private root, then drop to an
# unprivileged user under rlimits and a wall-clock limit. $1: the program file; limits from the env.
_SCRIPT = r"""
set -eu
R=$(mktemp -d /tmp/grpo_ray_sbx.XXXXXX)
mount -t tmpfs -o size=64m,mode=755 tmpfs "$R"
for d in usr bin lib lib32 lib64 etc; do
  [ -e /$d ] || continue
  if [ -L /$d ]; then ln -s "$(readlink /$d)" "$R/$d"
  else mkdir "$R/$d"; mount --rbind /$d "$R/$d"; mount -o remount,bind,ro "$R/$d"; fi
done
mkdir -p "$R/tmp" "$R/code" "$R/proc" "$R/dev"
mount -t tmpfs -o size=16m,mode=1777 tmpfs "$R/tmp"
mount -t proc proc "$R/proc"
for n in null zero urandom random; do touch "$R/dev/$n"; mount --bind /dev/$n "$R/dev/$n"; done
cp "$1" "$R/code/main.py"; chmod 755 "$R/code"; chmod 644 "$R/code/main.py"
cd "$R"
exec chroot "$R" /usr/bin/setpriv $SBX_USER --no-new-privs --inh-caps=-all --bounding-set=-all \
  /usr/bin/prlimit --as=$SBX_MEMORY --cpu=$SBX_CPU --fsize=$SBX_FSIZE --nofile=64 --nproc=$SBX_NPROC --core=0 -- \
  /usr/bin/timeout -s KILL $SBX_WALL /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp \
  /bin/sh -c 'cd /tmp && exec /usr/bin/python3 -I -S /code/main.py'
"""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: int = 10
    cpu_s: int = 5
    memory_bytes: int = 512 * 2**20
    file_bytes: int = 2**20
    processes: int = 64


class SandboxUnavailable(RuntimeError):
    """This machine allows no namespaces, so code cannot be confined."""


@functools.lru_cache(maxsize=1)
def sandbox_level() -> str:
    """"root" (namespaces as root), "user" (unprivileged user namespaces) or "none"."""
    if not (shutil.which("unshare") and shutil.which("setpriv") and shutil.which("prlimit") and shutil.which("python3")):
        return "none"
    for level, prefix in (("root", []), ("user", ["--user", "--map-root-user"])):
        try:
            done = subprocess.run(["unshare", *prefix, "--net", "--mount", "--pid", "--fork", "true"],
                                  capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return level
    return "none"


def run_sandboxed(code: str, limits: SandboxLimits = SandboxLimits()) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``code`` run in the sandbox; a status of 137 means killed (a limit)."""
    level = sandbox_level()
    if level == "none":
        raise SandboxUnavailable("this machine allows no Linux namespaces (unshare failed), so the python tool "
                                 "cannot confine code and does not run it")
    prefix = ["--user", "--map-root-user"] if level == "user" else []
    # as root the program runs as nobody; in a user namespace the caller is already unprivileged outside it
    user = "--reuid=65534 --regid=65534 --clear-groups" if level == "root" else "--clear-groups"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        path = f.name
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SBX_USER": user, "SBX_MEMORY": str(limits.memory_bytes),
           "SBX_CPU": str(limits.cpu_s), "SBX_FSIZE": str(limits.file_bytes), "SBX_NPROC": str(limits.processes),
           "SBX_WALL": str(limits.wall_s)}
    cmd = ["unshare", *prefix, "--net", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
           "--mount-proc=/proc", "--", "sh", "-c", _SCRIPT, "sandbox", path]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env, timeout=limits.wall_s + 5)
        out = (done.stdout + done.stderr).strip()
        return done.returncode, out
    except subprocess.TimeoutExpired:
        return 137, ""
    finally:
        os.unlink(path)


def python(code: str) -> str:
    """Run a Python program in a sandbox (no network, no files, 10 s) and return what it prints.

    Args:
        code: A complete Python program; print() the values you need.

    Returns:
        What the program printed (stdout and stderr), or why it was stopped.
    """
    status, out = run_sandboxed(code)
    if status == 137:
        return (out + "\n" if out else "") + "[stopped: it ran past its time or memory limit]"
    if len(out) > OUTPUT_LIMIT:
        out = out[:OUTPUT_LIMIT] + f"\n[... {len(out) - OUTPUT_LIMIT} more characters]"
    return out if out else "[the program printed nothing]"
