"""A shared-base sweep against today's sweep of separate trials: peak memory and wall time, side by side.

Runs the same 4-trial sweep two ways, alternating them (ABAB... for ``--rounds``; the order flips every
round) so that a machine whose speed drifts moves both alike:

    separate   every trial its own rollout worker, learner, reward worker and driver, one trial at a
               time (max_concurrent_trials: 1, as tune_configs/cpu_tiny.yaml runs on two cores), its
               actors with the train config's CPUs (a shared sweep file may give its shared actors
               fewer, since its trials run at once)
    shared     share_base: one rollout worker and one learner hold the base model for every trial; the
               4 trials run together, each with its own driver, reward worker and learner slot

Memory is the sum over the Ray worker processes (actors and Tune's trial processes: ``ray::`` in
their command line), sampled every half second; its peak is printed for each mode, and the separate
mode's is the peak of one trial's actors (they run one at a time). Two sums: the resident set sizes
(RSS), which count a page mapped by several processes (vLLM's CPU KV cache, the object store, shared
libraries) once per process, and the proportional set sizes (PSS), which split each shared page among
the processes that map it and so add up to the memory really used. The goal is a shared peak with 4
trials live of at most 1.5x the separate peak, and a wall time of at most 1.0x.

    .venv/bin/python bench/shared_sweep.py [--sweep tune_configs/cpu_tiny_shared.yaml] [--rounds 1] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def ray_worker_memory() -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over the Ray worker processes now."""
    rss = pss = 0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(proc.info["cmdline"] or []).startswith("ray::"):
                full = proc.memory_full_info()  # reads /proc/<pid>/smaps_rollup
                rss, pss = rss + full.rss, pss + full.pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss, pss


def solo_actor_cpus(sweep: Path) -> list[str]:
    """Overrides giving the rollout workers and learners the CPUs of the sweep's train config: what a
    sweep of separate trials, one at a time, runs them with."""
    import yaml

    from grpo_ray.config import config_from_dict, load_config

    train = yaml.safe_load(sweep.read_text())["train"]
    cfg = config_from_dict(train) if isinstance(train, dict) else load_config(sweep.parent / train, [])
    return [f"rollout.num_cpus_per_worker={cfg.rollout.num_cpus_per_worker}",
            f"learner.num_cpus_per_learner={cfg.learner.num_cpus_per_learner}"]


def run_sweep(sweep: Path, shared: bool, out: Path, overrides: list[str]) -> tuple[float, tuple[int, int], str]:
    """(seconds, (peak RSS sum, peak PSS sum) in bytes, the sweep's results table) of one ``grpo-ray tune`` run."""
    exe = shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")
    args = [exe, "tune", "--config", str(sweep), f"share_base={str(shared).lower()}", f"output_dir={out}",
            f"name={'shared' if shared else 'separate'}", *overrides]
    if not shared:
        args += ["max_concurrent_trials=1", *solo_actor_cpus(sweep)]
    peak, done = [0, 0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[:] = map(max, peak, ray_worker_memory())
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{'shared' if shared else 'separate'} sweep failed:\n{proc.stderr[-4000:]}")
    return seconds, (peak[0], peak[1]), (out / ("shared" if shared else "separate") / "results.md").read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", default=str(REPO / "tune_configs" / "cpu_tiny_shared.yaml"))
    ap.add_argument("--rounds", type=int, default=1, help="runs of each mode, alternating")
    ap.add_argument("--set", action="append", default=[], help="key=value override of the sweep (e.g. trainer.steps=6)")
    args = ap.parse_args()
    results: dict[bool, list[tuple[float, tuple[int, int]]]] = {False: [], True: []}
    tables: dict[bool, str] = {}
    with tempfile.TemporaryDirectory(prefix="shared_sweep_") as tmp:
        for i in range(args.rounds):
            for shared in ((False, True) if i % 2 == 0 else (True, False)):
                out = Path(tmp) / f"round{i}"
                seconds, peak, table = run_sweep(Path(args.sweep), shared, out, args.set)
                results[shared].append((seconds, peak))
                tables[shared] = table
                print(f"round {i + 1} {'shared  ' if shared else 'separate'}: {seconds:7.1f} s, peak Ray-worker RSS "
                      f"{peak[0] / 2**20:7.0f} MiB, PSS {peak[1] / 2**20:7.0f} MiB\n{table}", flush=True)
    sep_s = sum(s for s, _ in results[False]) / args.rounds
    sh_s = sum(s for s, _ in results[True]) / args.rounds
    def without_ids(table: str) -> list[str]:  # trial ids differ between sweeps; values and metrics must not
        return ["|".join(line.split("|")[2:]) for line in table.splitlines() if line.startswith("|")]

    # ASHA decides on what has reached a rung when a trial reports: trials run together may be stopped
    # at another rung than one at a time, so a difference in steps or status is the scheduler's
    print(f"\nsame results table (values, metrics, steps, status): {without_ids(tables[False]) == without_ids(tables[True])}")
    print(f"wall time   separate {sep_s:7.1f} s   shared {sh_s:7.1f} s   shared/separate {sh_s / sep_s:.2f} (goal <= 1.0)")
    for i, kind in enumerate(("RSS", "PSS")):
        sep_m = max(m[i] for _, m in results[False])
        sh_m = max(m[i] for _, m in results[True])
        print(f"peak {kind} sum separate {sep_m / 2**20:7.0f} MiB shared {sh_m / 2**20:7.0f} MiB shared/separate "
              f"{sh_m / sep_m:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
