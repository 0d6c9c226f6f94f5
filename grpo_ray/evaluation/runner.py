"""``grpo-ray eval``: greedy completions for a held-out set from the base model and/or an adapter,
scored as the evaluation table (``table.py``), written as JSON, markdown and one JSONL line per
completion."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from grpo_ray.errors import UserError
from grpo_ray.evaluation.records import finite_or_none, sample_records, write_json_atomic
from grpo_ray.evaluation.table import EvalResult, markdown_table, metrics_for_rows, score_eval

log = logging.getLogger("grpo_ray.eval")


@dataclass
class EvalRequest:
    model: str
    dataset: str
    adapter: Optional[str] = None
    compare_base: bool = False
    split: str = "test"
    data_dir: Optional[str] = None
    subset: Optional[str] = None
    limit: Optional[int] = None
    question_column: Optional[str] = None
    answer_column: Optional[str] = None
    system_prompt: Optional[str] = None
    tag_style: str = "reasoning"
    demonstrations: tuple[tuple, ...] = ()
    assistant_prefix: str = ""
    kind: Optional[Any] = None  # a KindSpec: the run's rollout kind (multi-turn with tools); None: single turn
    max_tokens: int = 256
    engine: str = "vllm"
    dtype: str = "auto"
    output: Optional[str] = None
    seed: int = 0
    max_model_len: Optional[int] = None  # None: the longest prompt plus max_tokens
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1


@dataclass
class EvalReport:
    results: dict[str, EvalResult]  # column label -> result
    metrics: tuple
    rows: list[dict[str, Any]]
    texts: dict[str, list[str]]
    seconds: dict[str, float]
    output_dir: Path

    def table(self) -> str:
        return markdown_table({k: r.means for k, r in self.results.items()}, self.metrics)


def _load_rows(req: EvalRequest) -> list[dict[str, Any]]:
    from grpo_ray.data.loader import load_prompt_dataset
    from grpo_ray.data.sources import DataSourceError

    try:
        return list(load_prompt_dataset(
            req.dataset, split=req.split, data_dir=req.data_dir, question_column=req.question_column,
            answer_column=req.answer_column, system_prompt=req.system_prompt, tag_style=req.tag_style,
            subset=req.subset, limit=req.limit, seed=req.seed, demonstrations=req.demonstrations,
            assistant_prefix=req.assistant_prefix,
        ))
    except DataSourceError as err:
        raise UserError(str(err)) from None


def _fit_to_context(rows, prompt_lengths, max_tokens: int, context: Optional[int]):
    """Rows whose prompt leaves room for ``max_tokens`` in ``context`` (the model's, or --max-model-len),
    and the engine's max_model_len: what the longest of them needs, no more."""
    if context is None:
        return rows, max(prompt_lengths) + max_tokens
    if max_tokens >= context:
        raise UserError(f"--max-tokens={max_tokens} leaves no room for a prompt in a {context}-token context")
    kept = [r for r, n in zip(rows, prompt_lengths) if n + max_tokens <= context]
    if not kept:
        raise UserError(f"every prompt is too long for the model's {context}-token context with --max-tokens={max_tokens}")
    if len(kept) < len(rows):
        log.warning("%d of %d prompts do not fit the %d-token context with --max-tokens=%d; they are left out",
                    len(rows) - len(kept), len(rows), context, max_tokens)
    longest = max(n for n in prompt_lengths if n + max_tokens <= context)
    return kept, min(context, longest + max_tokens)


def run_eval(req: EvalRequest) -> EvalReport:
    """Evaluate base and/or adapter on ``req.dataset``; write results under ``req.output``."""
    from transformers import AutoTokenizer

    from grpo_ray.rollout.generator import Generator, load_adapter, model_context_length
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.kinds.base import KindSpec, prompt_encoder
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    if not req.adapter and not req.compare_base:
        req.compare_base = True  # nothing but the base to evaluate
    adapter = load_adapter(req.adapter)  # fail on a bad adapter before loading anything big
    rows = _load_rows(req)
    if not rows:
        raise UserError(f"dataset {req.dataset!r} split {req.split!r} has no rows")
    model_path = resolve_model_path(req.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    kind = req.kind or KindSpec()
    encode = prompt_encoder(kind, tokenizer)  # as the rollout renders it (a multi-turn kind adds its tools)
    lengths = [len(encode(r["prompt"])) for r in rows]
    rows, max_model_len = _fit_to_context(rows, lengths, req.max_tokens, req.max_model_len or model_context_length(model_path))
    metrics = metrics_for_rows(rows, tools=kind.name == "multi_turn")

    gen = Generator(req.model, max_model_len=max_model_len, engine=req.engine, dtype=req.dtype,
                    adapter_config=adapter.peft_config if adapter else None, kind=kind,
                    gpu_memory_utilization=req.gpu_memory_utilization, tensor_parallel_size=req.tensor_parallel_size)
    prompts = [r["prompt"] for r in rows]
    request = GenerationRequest(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=req.max_tokens),
                                columns=[{k: v for k, v in r.items() if k != "prompt"} for r in rows])
    labels = (["base"] if req.compare_base else []) + (["tuned"] if adapter is not None else [])
    texts, results, seconds = {}, {}, {}
    for label in labels:  # base first: before any adapter is applied
        if label == "tuned":
            gen.apply_lora(adapter)
        start = time.perf_counter()
        batch = gen.generate(request, progress=True)
        seconds[label] = time.perf_counter() - start
        texts[label] = batch.final_texts()  # the whole last reply (an assistant prefix included), as training scores it
        results[label] = score_eval(rows, texts[label], metrics, tag_style=req.tag_style, episodes=batch.episode_stats)

    out = Path(req.output or _default_output(req))
    report = EvalReport(results, metrics, rows, texts, seconds, out)
    write_eval_outputs(report, req)
    return report


def _default_output(req: EvalRequest) -> str:
    name = Path(req.dataset).name.replace(":", "-") or "dataset"
    return str(Path("eval_results") / f"{name}-{req.split}-{time.strftime('%Y%m%d-%H%M%S')}")


def write_eval_outputs(report: EvalReport, req: EvalRequest) -> None:
    """results.json (means per model, metric maxima, settings), results.md (the table) and
    completions-<label>.jsonl (question, answer, response, extracted, metric values)."""
    import json

    out = report.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", {
        "model": req.model, "adapter": req.adapter, "dataset": req.dataset, "split": req.split,
        "count": len(report.rows), "max_tokens": req.max_tokens, "decoding": "greedy",
        "metrics": [{"key": m.key, "label": m.label, "max": m.maximum} for m in report.metrics],
        "results": {label: {k: finite_or_none(v) for k, v in r.means.items()} for label, r in report.results.items()},
        "seconds": report.seconds,
    })
    (out / "results.md").write_text(report.table() + "\n", encoding="utf-8")
    for label, result in report.results.items():
        records = sample_records(report.rows, report.texts[label], result, tag_style=req.tag_style)
        with (out / f"completions-{label}.jsonl").open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, default=str) + "\n")
