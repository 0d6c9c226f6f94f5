"""``grpo-ray eval``, ``generate`` and ``merge`` as a user runs them, on the shipped model and adapter.

The eval numbers are checked against an independent computation (transformers greedy decoding +
the reward functions), the shipped adapter must beat the base on held-out problems, and the merged
model must give base+adapter's logits and load in vLLM.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

BASE = "builtin:arithmetic-base"
TUNED = "builtin:arithmetic-tuned"
LIMIT = 60


def grpo_ray(*args: str, cwd: Path, stdin: str | None = None, timeout: int = 420) -> subprocess.CompletedProcess:
    exe = shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, input=stdin)


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "results"
    done = grpo_ray("eval", "--model", BASE, "--adapter", TUNED, "--compare-base", "--dataset", "arithmetic",
                    "--limit", str(LIMIT), "--max-tokens", "64", "--output", str(out), cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out


def _hf_greedy(model, tokenizer, prompts, max_tokens=64) -> list[str]:
    texts = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def test_eval_table_matches_independent_greedy_scoring(eval_run) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ray.data.loader import load_prompt_dataset
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rewards import correctness_reward, strict_format_reward

    done, out = eval_run
    results = json.loads((out / "results.json").read_text())
    assert results["count"] == LIMIT and set(results["results"]) == {"base", "tuned"}
    keys = [m["key"] for m in results["metrics"]]
    assert keys == ["hard_correctness", "soft_correctness", "integer", "soft_format", "strict_format"]
    assert [m["max"] for m in results["metrics"]] == [1.0, 1.0, 0.5, 0.5, 0.5]

    path = resolve_model_path(BASE)
    model, tok = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    rows = list(load_prompt_dataset("arithmetic", split="test", limit=LIMIT))
    texts = _hf_greedy(model, tok, [r["prompt"] for r in rows])
    comps = [[{"role": "assistant", "content": t}] for t in texts]
    hard = correctness_reward(None, comps, answer=[r["answer"] for r in rows])
    strict = strict_format_reward(None, comps)
    assert results["results"]["base"]["hard_correctness"] == pytest.approx(sum(hard) / LIMIT)
    assert results["results"]["base"]["strict_format"] == pytest.approx(sum(strict) / LIMIT)

    # what the user sees: the table, sample completions, the files
    assert "| hard correctness |" in done.stdout and "| metric | base | tuned | change | max |" in done.stdout
    assert "question:" in done.stdout and "extracted:" in done.stdout
    lines = (out / "completions-tuned.jsonl").read_text().splitlines()
    assert len(lines) == LIMIT and {"question", "answer", "response", "extracted"} <= set(json.loads(lines[0]))
    assert (out / "results.md").read_text().startswith("| metric | base | tuned |")


def test_shipped_adapter_beats_base_on_heldout(eval_run) -> None:
    results = json.loads((eval_run[1] / "results.json").read_text())["results"]
    assert results["tuned"]["hard_correctness"] >= results["base"]["hard_correctness"] + 0.05


QUESTION = "Ava has 23 apples. Ava gets 48 more apples. How many apples does Ava have now?"


@pytest.fixture(scope="module")
def tuned_answer(tmp_path_factory):
    """``grpo-ray generate`` with the shipped adapter through vLLM, one question on the command line
    (a vLLM start is the slow part: the merge test compares against this same run)."""
    done = grpo_ray("generate", "--model", BASE, "--adapter", TUNED, "--max-tokens", "64", QUESTION,
                    cwd=tmp_path_factory.mktemp("generate"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_generate_one_question_and_stdin(tuned_answer, tmp_path) -> None:
    assert "<answer>" in tuned_answer and "[answer: " in tuned_answer
    # questions typed one per line on stdin (the transformers engine: this is about reading stdin)
    two = grpo_ray("generate", "--model", BASE, "--max-tokens", "64", "--engine", "hf", cwd=tmp_path,
                   stdin=f"{QUESTION}\n\nBen has 12 boxes with 3 coins in each. How many coins does Ben have in total?\n")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("[answer: ") == 2


def test_merge_round_trip_logits_and_vllm(tuned_answer, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path

    out = tmp_path / "merged"
    done = grpo_ray("merge", "--model", BASE, "--adapter", TUNED, "--out", str(out), "--dtype", "float32", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(BASE), dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(resolve_adapter_path(TUNED))).eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(3, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    base_logits = AutoModelForCausalLM.from_pretrained(resolve_model_path(BASE), dtype=torch.float32)(input_ids=ids).logits
    assert (base_logits - expected).abs().max() > 1e-2  # the adapter matters, so equality above means something

    # vLLM serves the merged folder, answering as base + adapter does through the engine's own merge
    via_merged = grpo_ray("generate", "--model", str(out), "--max-tokens", "64", QUESTION, cwd=tmp_path)
    assert via_merged.returncode == 0, via_merged.stderr[-3000:]
    assert via_merged.stdout == tuned_answer

    # nothing already saved is lost: a second merge into the same folder is refused
    again = grpo_ray("merge", "--model", BASE, "--adapter", TUNED, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("args,message", [
    (["eval", "--model", BASE, "--adapter", "/no/such/adapter", "--dataset", "arithmetic"], "no such folder"),
    (["eval", "--model", BASE, "--dataset", "arithmetic", "--limit", "0"], "--limit=0"),
    (["eval", "--model", BASE, "--dataset", "/no/such/file.jsonl"], "file.jsonl"),
    (["generate", "--model", BASE, "--max-tokens", "100000", "hi"], "--max-tokens=100000"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, message) -> None:
    done = grpo_ray(*args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    """A random tiny model with a 4096-token context: PubMedQA abstracts are long in its small vocabulary."""
    from grpo_ray.models.tiny import arithmetic_corpus, build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("long_ctx"), arithmetic_corpus(200), vocab_size=300,
                                hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=128,
                                max_position_embeddings=4096)


@pytest.mark.parametrize("dataset,keys", [
    ("gsm8k", ["hard_correctness", "soft_correctness", "integer", "soft_format", "strict_format"]),
    ("pubmedqa", ["accuracy", "soft_format", "strict_format"]),
])
def test_eval_on_gsm8k_test_and_pubmedqa(shared_data, long_context_model, tmp_path, dataset, keys) -> None:
    out = tmp_path / "results"
    done = grpo_ray("eval", "--model", str(long_context_model), "--dataset", dataset, "--data-dir",
                    str(shared_data / dataset), "--limit", "6", "--max-tokens", "8", "--engine", "hf", "--output", str(out),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["split"] == "test" and results["count"] == 6
    assert [m["key"] for m in results["metrics"]] == keys and list(results["results"]) == ["base"]
    golds = [json.loads(line)["answer"] for line in (out / "completions-base.jsonl").read_text().splitlines()]
    if dataset == "pubmedqa":
        assert set(golds) <= {"yes", "no", "maybe"}
    else:
        assert all(g.lstrip("-").isdigit() for g in golds)
