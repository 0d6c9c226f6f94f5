"""One reward function in a child process of its own, which the reward worker can kill and replace.

A thread that misses its deadline cannot be stopped; a process can. :class:`RewardProcess` starts
``python -c <child loop>`` with two pipes (its stdin and stdout stay free for the user's prints),
ships the function to it by value with cloudpickle, lets it warm up (``fn.warmup``) and then sends
it one batch at a time. The parent never blocks on a child: it waits on the pipes with a deadline
(:func:`receive_until`), and a child that misses it is killed (SIGTERM, then SIGKILL after
``kill_grace_s``) and reaped, and a fresh one is started right away, so its warm-up overlaps the
rest of the step.

A child dies with its parent: with ``PR_SET_PDEATHSIG`` when the parent's main thread started it
(Linux), and in any case through a watchdog thread that exits once the parent pid changes (within
half a second; a C call that holds the GIL delays it until the call returns).

Messages are pickles: the batch is pickled once per batch and the same bytes go to every child, so
F process-run functions cost one pickle and F unpickles of the batch.
"""

from __future__ import annotations

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
from typing import Any, Mapping, Sequence

_CHILD_CODE = "from grpo_ray.rewards.isolation import _child_main; _child_main()"
_PR_SET_PDEATHSIG = 1


class RewardProcessError(RuntimeError):
    """An error raised in a reward process, carried back as its type name, message and traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name, self.message, self.remote_traceback = type_name, message, remote_traceback

    def describe(self) -> str:
        return f"{self.type_name}: {self.message}"


def pack_batch(prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The bytes every reward process gets for one batch: plain lists, pickled once.

    >>> pickle.loads(pack_batch(("q",), ["c"], {"answer": ("4",)}))
    (['q'], ['c'], {'answer': ['4']})
    """
    return pickle.dumps((list(prompts), list(completions), {k: list(v) for k, v in columns.items()}), protocol=5)


class RewardProcess:
    """A child process running one reward function; see the module docstring.

    ``state`` is ``"stopped"`` (no child), ``"warming"`` (started, warm-up not yet answered),
    ``"ready"`` (waiting for a batch) or ``"busy"`` (a batch sent, its answer not read).

    Args:
        name: the reward's display name (thread and log names).
        fn: the reward function; it must pickle with cloudpickle (closures over locks do not).
        kwargs: its settings, passed to every call and (those it accepts) to ``fn.warmup``.
    """

    def __init__(self, name: str, fn: Any, kwargs: Mapping[str, Any], *, kill_grace_s: float = 1.0) -> None:
        import cloudpickle  # a dependency of grpo_ray; imported here so importing the rewards stays cheap

        self.name = name
        self.kill_grace_s = kill_grace_s
        # Raises for a function that cannot travel (the scorer reports it as that function's failure).
        self._setup = cloudpickle.dumps((fn, dict(kwargs)))
        self.proc: subprocess.Popen | None = None
        self.to_child: Connection | None = None
        self.from_child: Connection | None = None
        self.state = "stopped"
        self.starts = 0  # children started so far, for tests and logs

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a child and send it the function; its warm-up runs while the caller does other work."""
        self.stop()
        child_in, to_child = Pipe(duplex=False)
        from_child, child_out = Pipe(duplex=False)
        main_thread = threading.current_thread() is threading.main_thread()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the parent's imports
        args = [str(child_in.fileno()), str(child_out.fileno()), str(os.getpid()), str(int(main_thread))]
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
        except (BrokenPipeError, OSError):
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
        kind = message[0]
        if kind in ("ready", "ok", "error"):
            self.state = "ready"
        return message

    def _exit_description(self) -> str:
        try:
            code = self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            return "its reward process closed its pipe"
        if code < 0:
            return f"its reward process was killed by {signal.Signals(-code).name}"
        return f"its reward process exited with code {code}"


def receive_until(procs: Sequence[RewardProcess], deadline: float) -> dict[RewardProcess, tuple]:
    """The next message of each process that answers before ``deadline`` (``time.monotonic()``)."""
    pending = {p.from_child: p for p in procs if p.from_child is not None}
    answers: dict[RewardProcess, tuple] = {}
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
    """Die when the parent does, so a busy loop never outlives the reward worker."""
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
    threading.Thread(target=watch, name="reward-parent-watchdog", daemon=True).start()


def _describe(err: BaseException) -> tuple[str, str, str]:
    return type(err).__name__, str(err), traceback.format_exc()


def _child_main() -> None:
    in_fd, out_fd, parent_pid, by_main = (int(a) for a in sys.argv[1:5])
    _follow_parent(parent_pid, bool(by_main))
    inbox, outbox = Connection(in_fd, writable=False), Connection(out_fd, readable=False)

    def answer(*message: Any) -> None:
        outbox.send_bytes(pickle.dumps(message, protocol=5))

    from grpo_ray.rewards.registry import score_completions, warm_up

    try:
        fn, kwargs = pickle.loads(inbox.recv_bytes())
        start = time.perf_counter()
        warm_up(fn, kwargs)
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which reports it
        answer("failed", *_describe(err))
        return
    answer("ready", time.perf_counter() - start)
    while True:
        try:
            data = inbox.recv_bytes()
        except (EOFError, OSError):  # the parent closed the pipe: we are done
            return
        start = time.perf_counter()
        try:
            prompts, completions, columns = pickle.loads(data)
            (values,) = score_completions([fn], prompts, completions, columns, [kwargs])
        except BaseException as err:  # noqa: BLE001 - sent to the parent, which reports it
            answer("error", *_describe(err), time.perf_counter() - start)
        else:
            answer("ok", values, time.perf_counter() - start)
