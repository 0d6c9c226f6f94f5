"""The learner-memory floor (grpo_ray/learner/memory.py) against hand-computed bytes, and its one-line refusal."""

from __future__ import annotations

import pytest

from grpo_ray.learner.memory import GIB, count_parameters, learner_state_bytes, memory_problem

pytestmark = pytest.mark.unit

P = 8_000_000_000  # an 8B model


def state(zero_stage: int, n: int, *, w: float = 2.0, lora: bool = False, reference: bool = False) -> float:
    return learner_state_bytes(P, weight_bytes=w, zero_stage=zero_stage, num_learners=n, lora=lora, reference=reference)


def test_full_fine_tuning_in_bf16_takes_16_bytes_a_parameter_split_by_the_zero_stage() -> None:
    # bf16 weights 2 + bf16 grads 2 + fp32 master 4 + Adam m 4 + Adam v 4, over n = 4 ranks
    assert state(0, 4) == P * 16
    assert state(1, 4) == P * (2 + 2 + 12 / 4)
    assert state(2, 4) == P * (2 + (2 + 12) / 4)
    assert state(3, 4) == P * 16 / 4
    # ZeRO-3 over many ranks: each still loads the whole model before DeepSpeed splits it
    assert state(3, 64) == P * 2
    # the reference model of algo.beta > 0 adds its weights, split only under ZeRO-3
    assert state(0, 4, reference=True) == P * 18 and state(3, 4, reference=True) == P * 18 / 4


def test_float32_has_no_master_copy_and_lora_counts_the_frozen_base() -> None:
    assert state(0, 1, w=4.0) == P * (4 + 4 + 8)
    assert state(2, 2, w=4.0) == P * (4 + (4 + 8) / 2)
    assert state(0, 1, lora=True) == P * 2 and state(3, 8, lora=True) == P * 2
    assert state(0, 1, w=0.5, lora=True) == P * 0.5  # NF4


def test_a_full_fine_tune_that_cannot_fit_names_the_bytes_and_the_fixes() -> None:
    h100 = 80 * GIB
    problem = memory_problem(P, h100, dtype="bfloat16", load_in_4bit=False, zero_stage=0, num_learners=4, lora=False)
    assert problem is not None and "\n" not in problem
    assert problem.startswith("learner.zero_stage=0: full fine-tuning of 8.00B parameters needs at least 119.2 GiB on "
                              "each of the 4 learner GPU(s)")
    assert "the learners' GPUs hold 80.0 GiB" in problem
    assert "set learner.zero_stage=3 (29.8 GiB over the 4 learners)" in problem  # 16 x 8e9 / 4 bytes
    assert "set model.lora.enabled=true (14.9 GiB)" in problem
    # already ZeRO-3 but too few ranks: the fewest that fit (128 GB / 80 GiB -> 2)
    one = memory_problem(P, h100, dtype="auto", load_in_4bit=False, zero_stage=3, num_learners=1, lora=False)
    assert one is not None and "learner.zero_stage=3 with learner.num_learners of at least 2" in one
    # what fits says nothing
    assert memory_problem(P, h100, dtype="bfloat16", load_in_4bit=False, zero_stage=3, num_learners=4, lora=False) is None
    assert memory_problem(P, h100, dtype="bfloat16", load_in_4bit=False, zero_stage=0, num_learners=4, lora=True) is None


def test_a_base_too_big_for_the_gpu_even_with_lora_points_at_4_bits() -> None:
    seventy = 70_000_000_000
    problem = memory_problem(seventy, 80 * GIB, dtype="bfloat16", load_in_4bit=False, zero_stage=0, num_learners=8, lora=True)
    assert problem == ("model.name_or_path: the base's 70.00B parameters take 130.4 GiB on each learner GPU and the "
                       "learners' GPUs hold 80.0 GiB; set model.load_in_4bit=true (32.6 GiB)")
    # full fine-tuning of it: ZeRO-3 cannot help (each rank loads 130 GiB first), only 4-bit LoRA
    full = memory_problem(seventy, 80 * GIB, dtype="bfloat16", load_in_4bit=False, zero_stage=3, num_learners=8, lora=False)
    assert full is not None and "zero_stage=3 with" not in full and full.endswith(
        "set model.lora.enabled=true model.load_in_4bit=true")


def test_the_parameter_count_comes_from_the_config_alone() -> None:
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_model_path

    path = resolve_model_path("builtin:arithmetic-base")
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert count_parameters(path) == sum(p.numel() for p in loaded.parameters())  # tied embeddings once


def test_the_docstring_examples_hold() -> None:
    import doctest

    from grpo_ray.learner import memory

    result = doctest.testmod(memory)
    assert result.attempted > 0 and result.failed == 0
