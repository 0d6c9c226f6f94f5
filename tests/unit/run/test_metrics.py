"""MetricLogger and its sinks: JSONL stays valid with NaN, a resumed run logs each step exactly once,
TensorBoard's own reader finds the scalars and tables, the console does not spam logs, and missing
tracker packages fail at construction with the pip command."""

from __future__ import annotations

import io
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from grpo_ray.config import ConfigError, MetricSink as MetricSinkName, TrainerConfig
from grpo_ray.metric_sinks import SINKS, markdown_table, text_table
from grpo_ray.metric_sinks.console import ConsoleSink
from grpo_ray.run.metrics import MetricLogger, PhaseTimer

pytestmark = pytest.mark.unit

ROWS = [
    {
        "prompt": "What is 2 + 2?\nAnswer with a number.",
        "completion": "<reasoning>\n" + "two and two " * 40 + "\n</reasoning>\n<answer>\n4\n</answer>",
        "answer": "4",
        "reward": 1.5,
        "rewards/correctness": 1.0,
        "rewards/strict_format": float("nan"),
    },
    {"prompt": "a | b", "completion": "x", "answer": "5", "reward": 0.0, "rewards/correctness": 0.0,
     "rewards/strict_format": 0.5},
]


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def strict_json(line: str) -> dict[str, Any]:
    """json.loads that rejects NaN/Infinity, which Python would otherwise accept but JSON forbids."""
    def reject(constant: str) -> None:
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(line, parse_constant=reject)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [strict_json(line) for line in path.read_text().splitlines()]


def metrics(step: int) -> dict[str, float]:
    return {"reward": step / 10, "kl": float("nan"), "grad_norm": float("inf"), "timing/generate": 0.25}


def trainer(out: Path, sinks: list[str], steps: int = 6) -> TrainerConfig:
    return TrainerConfig(output_dir=str(out), sinks=sinks, steps=steps)


def run_steps(out: Path, steps: range, sinks: list[str], start_step: int = 0) -> None:
    """Log ``steps``, with a completions table at every even one."""
    with MetricLogger(trainer(out, sinks), start_step=start_step, stream=io.StringIO()) as log:
        for step in steps:
            log.log(step, metrics(step))
            if step % 2 == 0:
                log.log_completions(step, ROWS)


def test_jsonl_one_valid_object_per_step_with_null_for_nan(tmp_path: Path) -> None:
    run_steps(tmp_path, range(1, 4), ["jsonl"])
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0]["reward"] == 0.1 and records[0]["kl"] is None and records[0]["grad_norm"] is None
    assert records[0]["timing/generate"] == 0.25
    assert all(isinstance(r["time"], float) and r["time"] > 1.6e9 for r in records)
    rows = read_jsonl(tmp_path / "completions.jsonl")
    assert [r["step"] for r in rows] == [2, 2]
    assert rows[0]["prompt"] == ROWS[0]["prompt"] and rows[0]["completion"] == ROWS[0]["completion"]  # not clipped
    assert rows[0]["rewards/strict_format"] is None and rows[1]["rewards/strict_format"] == 0.5


def test_jsonl_lines_are_flushed_as_written(tmp_path: Path) -> None:
    log = MetricLogger(trainer(tmp_path, ["jsonl"], 3))
    log.log(1, {"reward": 1.0})
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["reward"] == 1.0  # readable before close
    log.close()
    log.close()  # a second close is harmless


def test_numpy_and_torch_scalars_are_logged_as_numbers(tmp_path: Path) -> None:
    np, torch = pytest.importorskip("numpy"), pytest.importorskip("torch")
    with MetricLogger(trainer(tmp_path, ["jsonl"], 3)) as log:
        log.log(1, {"a": np.float32(0.5), "b": torch.tensor(2.0), "c": np.int64(3), "d": torch.tensor(float("nan"))})
    record = read_jsonl(tmp_path / "metrics.jsonl")[0]
    assert record | {"time": 0} == {"step": 1, "a": 0.5, "b": 2.0, "c": 3, "d": None, "time": 0}


def test_resume_logs_each_step_exactly_once(tmp_path: Path) -> None:
    run_steps(tmp_path, range(1, 6), ["jsonl"])  # crashed after logging step 5; last checkpoint at 3
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "rew')  # and mid-write of step 6
    run_steps(tmp_path, range(4, 7), ["jsonl"], start_step=3)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in read_jsonl(tmp_path / "completions.jsonl")] == [2, 2, 4, 4, 6, 6]


def test_fresh_run_starts_files_empty(tmp_path: Path) -> None:
    run_steps(tmp_path, range(1, 4), ["jsonl"])
    run_steps(tmp_path, range(1, 3), ["jsonl"])
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


def test_resume_from_rewinds_mid_run(tmp_path: Path) -> None:
    with MetricLogger(trainer(tmp_path, ["jsonl"], 5)) as log:
        for step in (1, 2, 3):
            log.log(step, {"reward": 0.0})
        log.resume_from(1)  # e.g. a learner died and the driver reloaded the step-1 checkpoint
        for step in (2, 3):
            log.log(step, {"reward": 1.0})
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["reward"]) for r in records] == [(1, 0.0), (2, 1.0), (3, 1.0)]


def test_tensorboard_event_file_reads_back(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_steps(tmp_path, range(1, 4), ["tensorboard"])
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"reward", "kl", "timing/generate"} <= set(scalars)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("reward")] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert math.isnan(acc.Scalars("kl")[0].value)
    texts = acc.Tensors("completions/text_summary")
    assert [t.step for t in texts] == [2]
    table = texts[0].tensor_proto.string_val[0].decode()
    assert "| prompt | completion | answer | reward | rewards/correctness |" in table
    assert "a \\| b" in table  # a pipe in a cell does not break the table


def test_tensorboard_resume_hides_steps_after_the_resumed_one(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_steps(tmp_path, range(1, 6), ["tensorboard"])
    run_steps(tmp_path, range(4, 7), ["tensorboard"], start_step=3)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward")] == [1, 2, 3, 4, 5, 6]


def test_console_plain_lines_are_throttled_when_not_a_tty(tmp_path: Path) -> None:
    stream = io.StringIO()
    with MetricLogger(trainer(tmp_path, ["console"], 50), stream=stream) as log:
        for step in range(1, 51):
            log.log(step, {"reward": 0.5, "kl": 0.0123456, "entropy": 1.0})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first and the last step, not 50 lines (nor carriage returns)
    assert lines[0].startswith("step 1/50 | reward 0.5 | kl 0.01235")
    assert lines[1].startswith("step 50/50") and "eta 00:00" in lines[1]
    assert "\r" not in stream.getvalue() and "entropy" not in stream.getvalue()


def test_console_plain_lines_every_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ConsoleSink, "min_interval_s", 0.0)
    stream = io.StringIO()
    with MetricLogger(trainer(tmp_path, ["console"], 4), start_step=1, stream=stream) as log:
        for step in (2, 3, 4):
            log.log(step, {"reward": 1.0})
    assert [line.split(" | ")[0] for line in stream.getvalue().splitlines()] == ["step 2/4", "step 3/4", "step 4/4"]


def test_console_progress_bar_on_a_tty(tmp_path: Path) -> None:
    stream = TTY()
    with MetricLogger(trainer(tmp_path, ["console"], 10), start_step=4, stream=stream) as log:
        bar = log.sinks["console"].bar
        assert bar is not None and bar.n == 4 and bar.total == 10  # initial= the resumed step
        log.log(5, {"reward": 0.25, "kl": 0.5})
        log.log(6, {"reward": 0.75, "kl": 0.5})
        assert bar.n == 6
        log.log_completions(6, ROWS)
    out = stream.getvalue()
    assert "6/10" in out and "reward=0.75" in out and "kl=0.5" in out
    assert "completions at step 6" in out


def test_console_table_is_clipped_to_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()
    with MetricLogger(trainer(tmp_path, ["console"], 3), stream=stream) as log:
        log.log_completions(1, ROWS * 10)
    out = stream.getvalue()
    assert "completions at step 1 (first 8 of 20)" in out
    lines = out.splitlines()
    assert len(lines) == 1 + 2 + 8
    assert max(len(line) for line in lines) < 160
    assert "correctness" in lines[1] and "strict_format" in lines[1]
    assert "two and two" in out and "..." in out


def test_table_helpers() -> None:
    md = markdown_table(ROWS)
    assert md.count("\n") == 3 and "<br>" in md
    plain = text_table(ROWS, {"completion": 10})
    assert "<reason..." in plain.replace("\n", " ")


@pytest.mark.parametrize("sink, package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_tracker_package_is_a_one_line_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    with pytest.raises(ConfigError) as err:
        MetricLogger(trainer(tmp_path, ["jsonl", sink], 3))
    message = str(err.value)
    assert "\n" not in message
    assert f"trainer.sinks includes {sink!r}" in message and f"pip install {package}" in message


def test_sink_registry_matches_the_config_choices() -> None:
    assert set(SINKS.names()) == set(typing.get_args(MetricSinkName))
    with pytest.raises(ValueError, match="unknown metric sink 'tensorbord'.*did you mean 'tensorboard'"):
        SINKS.get("tensorbord")


def test_logger_follows_the_trainer_section(tmp_path: Path) -> None:
    cfg = TrainerConfig(output_dir=str(tmp_path), steps=7, sinks=["jsonl", "console", "jsonl"])
    with MetricLogger(cfg, stream=io.StringIO()) as log:
        assert list(log.sinks) == ["jsonl", "console"]
        log.log(1, {"reward": 1.0})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]


def test_phase_timer_adds_up_and_pops() -> None:
    timer = PhaseTimer()
    with timer.phase("generate"):
        pass
    with pytest.raises(RuntimeError):
        with timer.phase("train"):
            raise RuntimeError("boom")
    with timer.phase("generate"):
        sum(range(10000))
    times = timer.pop()
    assert set(times) == {"timing/generate", "timing/train"}
    assert all(v >= 0 for v in times.values())
    assert timer.pop() == {}


def test_phase_timer_doctest() -> None:
    import doctest

    import grpo_ray.run.metrics

    assert doctest.testmod(grpo_ray.run.metrics).failed == 0


def test_a_fresh_run_drops_an_earlier_runs_step_zero_evaluation_too(tmp_path: Path) -> None:
    with MetricLogger(trainer(tmp_path, ["jsonl"], 3)) as log:
        log.log(0, {"eval/hard_correctness": 0.1})  # an earlier attempt that died after its first evaluation
    with MetricLogger(trainer(tmp_path, ["jsonl"], 3), fresh=True) as log:
        log.log(0, {"eval/hard_correctness": 0.2})
        log.log(1, {"reward": 1.0})
    assert [(r["step"], r.get("eval/hard_correctness")) for r in read_jsonl(tmp_path / "metrics.jsonl")] == [(0, 0.2), (1, None)]
    with MetricLogger(trainer(tmp_path, ["jsonl"], 3), start_step=0) as log:  # resumed at 0: step 0 is kept
        log.log(1, {"reward": 2.0})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1]
