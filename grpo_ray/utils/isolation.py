"""User code in a child process of its own, which the parent can kill at a deadline and replace.

A thread that misses its deadline cannot be stopped; a process can. :class:`IsolatedProcess` starts
``python -c <child loop>`` with two pipes (its stdin and stdout stay free for the user's prints),
ships a setup payload to it by value with cloudpickle (the user's function, its settings), and then
exchanges one message at a time. The parent never blocks on a child: it waits on the pipes with a
deadline (:func:`receive_until`), and a child that misses it is killed (SIGTERM, then SIGKILL after
``kill_grace_s``) and reaped, and a fresh one can be started right away.

What the child does with the messages is its ``entry`` (``"module:function"``, called in the child as
``entry(setup, receive, answer)``): reward functions score batches (``grpo_ray.rewards.isolation``),
tools answer calls (``grpo_ray.tools.process``).

A child dies with its parent: with ``PR_SET_PDEATHSIG`` when the parent's main thread started it
(Linux), and in any case through a watchdog thread that exits once the parent pid changes (within
half a second; a C call that holds the GIL delays it until the call returns).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_pipes
from typing import Any, Sequence

_CHILD_CODE = "from grpo_ray.utils.isolation import child_main; child_main()"
_PR_SET_PDEATHSIG = 1


class RemoteError(RuntimeError):
    """An error raised in a child process, carried back as its type name, message and traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name, self.message, self.remote_traceback = type_name, message, remote_traceback

    def describe(self) -> str:
        return f"{self.type_name}: {self.message}"


class IsolatedProcess:
    """A child process running ``entry`` on ``setup``; see the module docstring.

    ``state`` is ``"stopped"`` (no child), ``"warming"`` (started, its first answer not yet read),
    ``"ready"`` (waiting for a message) or ``"busy"`` (a message sent, its answer not read). The child
    answers its setup with ``("ready", ...)`` or ``("failed", ...)``, and each message with
    ``("ok", ...)`` or ``("error", ...)``; a child that died reads as ``("died", why)``.
    """

    def __init__(self, name: str, setup: Any, entry: str, *, kill_grace_s: float = 1.0, kind: str = "worker") -> None:
        import cloudpickle  # a dependency of grpo_ray; imported here so importing callers stays cheap

        self.name, self.entry, self.kind = name, entry, kind
        self.kill_grace_s = kill_grace_s
        # Raises for user code that cannot travel (the caller reports it as that function's failure).
        self._setup = cloudpickle.dumps(setup)
        self.proc: subprocess.Popen | None = None
        self.to_child: Connection | None = None
        self.from_child: Connection | None = None
        self.state = "stopped"
        self.starts = 0  # children started so far, for tests and logs

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a child and send it the setup; whatever it does first overlaps the caller's work."""
        self.stop()
        child_in, to_child = Pipe(duplex=False)
        from_child, child_out = Pipe(duplex=False)
        main_thread = threading.current_thread() is threading.main_thread()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the parent's imports
        args = [str(child_in.fileno()), str(child_out.fileno()), str(os.getpid()), str(int(main_thread)), self.entry]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, *args], stdin=subprocess.DEVNULL, env=env,
                pass_fds=(child_in.fileno(), child_out.fileno()),
            )
        finally:
            child_in.close()
            child_out.close()
        self.to_child, self.from_child = to_child, from_child
        self.starts += 1
        self.state = "warming"
        self.send(self._setup)

    def stop(self) -> None:
        """Kill the child (SIGTERM, SIGKILL after the grace period) and reap it; a no-op when stopped."""
        proc, self.proc = self.proc, None
        for conn in (self.to_child, self.from_child):
            if conn is not None:
                conn.close()
        self.to_child = self.from_child = None
        self.state = "stopped"
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.kill_grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    # -- messages --------------------------------------------------------------------------------
    def send(self, data: bytes) -> bool:
        """Send one message; False if the child is gone (its pipe is closed)."""
        try:
            self.to_child.send_bytes(data)
        except (BrokenPipeError, OSError, AttributeError):
            return False
        if self.state == "ready":
            self.state = "busy"
        return True

    def read(self) -> tuple:
        """The child's next message (call only once its pipe is readable). A child that died
        answers ``("died", description)``."""
        try:
            message = pickle.loads(self.from_child.recv_bytes())
        except (EOFError, OSError):
            message = ("died", self._exit_description())
        if message[0] in ("ready", "ok", "error"):
            self.state = "ready"
        return message

    def call(self, data: bytes, timeout_s: float) -> tuple:
        """Send ``data`` and wait for the answer until ``timeout_s``; a child that misses it is killed
        and answers ``("timeout",)``. Starts (and waits for) a child first when none runs."""
        if self.state == "stopped":
            self.start()
        if self.state == "warming":
            first = receive_until([self], time.monotonic() + max(timeout_s, 60.0)).get(self)
            if first is None or first[0] != "ready":
                self.stop()
                return first or ("timeout",)
        if not self.send(data):
            self.stop()
            return ("died", "its process was gone")
        answer = receive_until([self], time.monotonic() + timeout_s).get(self)
        if answer is None:
            self.stop()
            return ("timeout",)
        if answer[0] == "died":
            self.stop()
        return answer

    def _exit_description(self) -> str:
        try:
            code = self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            return f"its {self.kind} process closed its pipe"
        if code < 0:
            return f"its {self.kind} process was killed by {signal.Signals(-code).name}"
        return f"its {self.kind} process exited with code {code}"


def receive_until(procs: Sequence[IsolatedProcess], deadline: float) -> dict[IsolatedProcess, tuple]:
    """The next message of each process that answers before ``deadline`` (``time.monotonic()``)."""
    pending = {p.from_child: p for p in procs if p.from_child is not None}
    answers: dict[IsolatedProcess, tuple] = {}
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for conn in wait_for_pipes(list(pending), timeout=remaining):
            proc = pending.pop(conn)
            answers[proc] = proc.read()
    return answers


# -- the child side ------------------------------------------------------------------------------
def _follow_parent(parent_pid: int, started_by_main_thread: bool) -> None:
    """Die when the parent does, so a busy loop never outlives it."""
    if started_by_main_thread and sys.platform.startswith("linux"):
        # The signal fires when the thread that forked exits; the main thread lives as long as the process.
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=watch, name="isolation-parent-watchdog", daemon=True).start()


def describe(err: BaseException) -> tuple[str, str, str]:
    return type(err).__name__, str(err), traceback.format_exc()


def child_main() -> None:
    in_fd, out_fd, parent_pid, by_main = (int(a) for a in sys.argv[1:5])
    module, _, attr = sys.argv[5].partition(":")
    _follow_parent(parent_pid, bool(by_main))
    inbox, outbox = Connection(in_fd, writable=False), Connection(out_fd, readable=False)

    def answer(*message: Any) -> None:
        outbox.send_bytes(pickle.dumps(message, protocol=5))

    def receive() -> Any:
        """The next message, unpickled; None once the parent closed the pipe."""
        try:
            return pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            return None

    try:
        setup = receive()  # the user's code arrives here: a module missing on this node fails to load
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which reports it
        answer("failed", *describe(err))
        return
    getattr(importlib.import_module(module), attr)(setup, receive, answer)
