"""The W&B and MLflow sinks against the real libraries, offline: ``MetricLogger`` logs a few steps
(NaN and inf values, a completions table, a resume, a rewind) and each test reads back what the
library itself stored: W&B's transaction log (the run's ``.wandb`` file, decoded with W&B's own
protobuf classes) and MLflow's SQLite store (through ``MlflowClient``)."""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from grpo_ray.config import TrainerConfig
from grpo_ray.metric_sinks.tracking import flat_params
from grpo_ray.run.metrics import MetricLogger

pytestmark = pytest.mark.unit

ROWS = [
    {"prompt": "What is 2 + 2?", "completion": "<answer>\n4\n</answer>", "answer": "4", "reward": 1.5,
     "rewards/correctness": 1.0, "rewards/strict_format": float("nan")},
    {"prompt": "a | b", "completion": "x", "answer": "5", "reward": 0.0, "rewards/correctness": 0.0,
     "rewards/strict_format": 0.5},
]
# what a table holds for ROWS: NaN is JSON null in both trackers
TABLE_COLUMNS = ["prompt", "completion", "answer", "reward", "rewards/correctness", "rewards/strict_format"]
TABLE_DATA = [["What is 2 + 2?", "<answer>\n4\n</answer>", "4", 1.5, 1.0, None], ["a | b", "x", "5", 0.0, 0.0, 0.5]]
RUN_CONFIG = {"algo": {"beta": 0.04, "epsilon_high": None}, "trainer": {"steps": 6, "sinks": ["jsonl", "wandb"]}}


def metrics(step: int, reward: float) -> dict[str, Any]:
    return {"reward": reward, "kl": float("nan"), "grad_norm": float("inf"), "timing/generate": 0.25, "note": "text"}


def logger(out: Path, sink: str, start_step: int = 0, run_config: dict[str, Any] = RUN_CONFIG) -> MetricLogger:
    trainer = TrainerConfig(output_dir=str(out), sinks=[sink], steps=6, log_completions_every=2)
    return MetricLogger(trainer, start_step=start_step, run_config=run_config)


def log_steps(log: MetricLogger, steps: range, reward: float | None = None) -> None:
    """Log ``steps`` (reward step/10 unless given) and a completions table at step 2."""
    for step in steps:
        log.log(step, metrics(step, step / 10 if reward is None else reward))
        if step == 2:
            log.log_completions(step, ROWS)


# -- W&B ----------------------------------------------------------------------------------------
@dataclass
class WandbRun:
    """One offline run as its ``.wandb`` file holds it."""

    dir: Path
    id: str = ""
    start_ns: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per row, W&B's own "_" keys left out
    metrics: list[Any] = field(default_factory=list)  # define_metric records

    def points(self, key: str) -> list[tuple[int, Any]]:
        return [(row["step"], row[key]) for row in self.history if key in row]


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` file, in order.

    The file is a LevelDB log (github.com/google/leveldb, doc/log_format.md) after a 7-byte header
    (":W&B", a 2-byte magic, a version byte): 32 KiB blocks of chunks, each a 7-byte header (checksum,
    little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes. The records are
    W&B's own ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", data[:7]
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: the block is padded
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding at the end of a block
            pos += -pos % block
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def nested(items: Any) -> dict[str, Any]:
    """History or config items (a key, or a nested key path, and a JSON value) as a nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(item.value_json)  # Python's json reads W&B's NaN and Infinity
    return out


def wandb_runs(out: Path) -> list[WandbRun]:
    """Every offline run W&B wrote under ``out/wandb``, oldest first."""
    import wandb

    # W&B's service process writes the file behind run.finish(), which can return before the
    # history is on disk; teardown waits for the service to exit.
    wandb.teardown()
    runs = []
    for path in (out / "wandb").glob("offline-run-*/run-*.wandb"):
        run, kinds = WandbRun(dir=path.parent), []
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            kinds.append(kind)
            if kind == "run":
                run.id, run.start_ns = record.run.run_id, record.run.start_time.ToNanoseconds()
                run.config.update(nested(record.run.config.update))
            elif kind == "config":
                run.config.update(nested(record.config.update))
            elif kind == "history":
                run.history.append({k: v for k, v in nested(record.history.item).items() if not k.startswith("_")})
            elif kind == "metric":
                run.metrics.append(record.metric)
        assert kinds[-1] == "exit", f"{path}: the run's log ends with {kinds[-1]!r}, not its exit record"
        run.config.pop("_wandb", None)
        runs.append(run)
    return sorted(runs, key=lambda r: r.start_ns)


@pytest.fixture
def wandb_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An output dir for an offline W&B run; W&B's own files (cache, staging, settings) stay in tmp."""
    wandb = pytest.importorskip("wandb")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_PROJECT": "grpo-ray-test"}.items():
        monkeypatch.setenv(var, value)
    yield tmp_path / "run"
    wandb.teardown()  # the next test's W&B reads its environment afresh


def test_wandb_run_holds_each_step_nan_inf_table_and_config(wandb_out: Path) -> None:
    with logger(wandb_out, "wandb") as log:
        log_steps(log, range(1, 4))
    [run] = wandb_runs(wandb_out)
    assert run.id == (wandb_out / "wandb_run_id").read_text()
    assert run.config == RUN_CONFIG
    assert run.points("reward") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert run.points("timing/generate") == [(1, 0.25), (2, 0.25), (3, 0.25)]
    assert run.points("note") == [(1, "text"), (2, "text"), (3, "text")]
    assert [s for s, v in run.points("kl") if math.isnan(v)] == [1, 2, 3]
    assert run.points("grad_norm") == [(1, math.inf), (2, math.inf), (3, math.inf)]
    [(step, table)] = run.points("completions")
    assert step == 2 and table["_type"] == "table-file" and table["nrows"] == 2
    stored = json.loads((run.dir / "files" / table["path"]).read_text())
    assert stored == {"columns": TABLE_COLUMNS, "data": TABLE_DATA}
    # every chart is drawn against the logged step, not W&B's count of log calls
    assert [(m.glob_name, m.step_metric) for m in run.metrics if m.glob_name] == [("*", "step")]


def test_wandb_resumed_logger_continues_the_run_at_step_k(wandb_out: Path) -> None:
    with logger(wandb_out, "wandb") as log:
        log_steps(log, range(1, 6))  # stopped after step 5; the last checkpoint was step 3
    with logger(wandb_out, "wandb", start_step=3) as log:
        log_steps(log, range(4, 7), reward=1.0)
    first, resumed = wandb_runs(wandb_out)
    assert resumed.id == first.id == (wandb_out / "wandb_run_id").read_text()
    assert first.points("reward") == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5)]
    assert resumed.points("reward") == [(4, 1.0), (5, 1.0), (6, 1.0)]  # synced, the run shows both for 4 and 5
    with logger(wandb_out, "wandb") as log:  # a fresh run in the same output dir is a new tracked run
        log_steps(log, range(1, 2))
    assert wandb_runs(wandb_out)[-1].id not in (first.id, "") and (wandb_out / "wandb_run_id").read_text() != first.id


def test_wandb_rewind_mid_run_keeps_the_redone_steps(wandb_out: Path) -> None:
    with logger(wandb_out, "wandb") as log:
        for step in (1, 2, 3):
            log.log(step, {"reward": 0.0})
        log.resume_from(1)  # the driver reloaded the step-1 checkpoint
        for step in (2, 3):
            log.log(step, {"reward": 1.0})
    [run] = wandb_runs(wandb_out)
    # logged as W&B's _step, step 2 would keep 0.0 (re-logged below the current _step: ignored)
    assert run.points("reward") == [(1, 0.0), (2, 0.0), (3, 0.0), (2, 1.0), (3, 1.0)]


# -- MLflow -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A SQLite tracking store and an experiment whose artifacts stay in tmp (built once: its
    schema migration takes seconds)."""
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = mlflow.MlflowClient(uri).create_experiment("grpo-ray-test", (root / "artifacts").as_uri())
    return uri, experiment_id


@pytest.fixture
def mlflow_client(mlflow_store: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    import mlflow

    uri, experiment_id = mlflow_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    return mlflow.MlflowClient(uri)


def mlflow_points(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_run_holds_each_step_nan_inf_table_params_and_config(mlflow_client: Any, tmp_path: Path) -> None:
    import mlflow

    with logger(tmp_path / "run", "mlflow") as log:
        log_steps(log, range(1, 4))
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text()
    run = mlflow_client.get_run(run_id)
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert mlflow_points(mlflow_client, run_id, "reward") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert mlflow_points(mlflow_client, run_id, "timing/generate") == [(1, 0.25), (2, 0.25), (3, 0.25)]
    assert [s for s, v in mlflow_points(mlflow_client, run_id, "kl") if math.isnan(v)] == [1, 2, 3]
    # MLflow's SQL store keeps inf as the largest float
    assert mlflow_points(mlflow_client, run_id, "grad_norm") == [(s, sys.float_info.max) for s in (1, 2, 3)]
    assert "note" not in run.data.metrics  # a text value is no metric
    assert run.data.params == {"algo.beta": "0.04", "algo.epsilon_high": "None", "trainer.steps": "6",
                               "trainer.sinks": '["jsonl", "wandb"]'}
    assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config.json") == RUN_CONFIG
    assert [a.path for a in mlflow_client.list_artifacts(run_id, "completions")] == ["completions/step_0000002.json"]
    table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/completions/step_0000002.json")
    assert table == {c: [row[i] for row in TABLE_DATA] for i, c in enumerate(TABLE_COLUMNS)}


def test_mlflow_resumed_logger_continues_the_run_at_step_k(mlflow_client: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with logger(out, "mlflow") as log:
        log_steps(log, range(1, 6))  # stopped after step 5; the last checkpoint was step 3
    run_id = (out / "mlflow_run_id").read_text()
    longer = {**RUN_CONFIG, "trainer": {**RUN_CONFIG["trainer"], "steps": 8}}  # a resume may raise trainer.steps
    with logger(out, "mlflow", start_step=3, run_config=longer) as log:
        log_steps(log, range(4, 7), reward=1.0)
    assert (out / "mlflow_run_id").read_text() == run_id
    assert mlflow_points(mlflow_client, run_id, "reward") == [
        (1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (4, 1.0), (5, 0.5), (5, 1.0), (6, 1.0)]
    assert mlflow_client.get_run(run_id).data.params == flat_params(RUN_CONFIG)  # the first attempt's params
    with logger(out, "mlflow") as log:  # a fresh run in the same output dir is a new tracked run
        log_steps(log, range(1, 2))
    fresh = (out / "mlflow_run_id").read_text()
    assert fresh != run_id and mlflow_points(mlflow_client, fresh, "reward") == [(1, 0.1)]
