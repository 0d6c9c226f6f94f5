"""The built-in arithmetic task: every problem is checked by recomputing it from its text."""

from __future__ import annotations

import hashlib
import operator
import re
import subprocess
import sys

import pytest

from grpo_ray.data.arithmetic import (
    HELDOUT_SEED,
    HELDOUT_SIZE,
    TEMPLATES,
    generate_problems,
    heldout_problems,
    training_problems,
)

pytestmark = pytest.mark.unit

# Independent of the generator: how each solution line is evaluated.
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
LINE = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")
ONE_STEP = {"add", "sub", "mul", "div"}
TWO_STEP = {"add_sub", "mul_add", "sub_add"}
# sha256 of the 200 held-out questions joined by newlines
HELDOUT_DIGEST = "066e4adc782a347f984d26ea5661d44fc8f26ea0570745995d59a6bb96ffd1ff"


def check_problem(p: dict) -> list[tuple[int, str, int, int]]:
    """Assert that ``p`` is internally consistent; return its parsed steps."""
    *lines, final = p["solution"].split("\n")
    assert final == f"#### {p['answer']}"
    assert p["reasoning"] == "\n".join(lines)
    assert len(lines) == p["steps"] == (1 if p["template"] in ONE_STEP else 2)
    steps = []
    for line in lines:
        match = LINE.match(line)
        assert match, f"malformed step {line!r} in {p}"
        left, op, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
        assert OPS[op](left, right) == result, f"wrong step {line!r}"
        assert result > 0
        steps.append((left, op, right, result))
    if len(steps) == 2:
        assert steps[1][0] == steps[0][3], "the second step must start from the first result"
    assert str(steps[-1][3]) == p["answer"]
    # The question states exactly the operands the solution uses, in order.
    operands = [steps[0][0], steps[0][2], *(s[2] for s in steps[1:])]
    assert [int(n) for n in re.findall(r"\d+", p["question"])] == operands, p
    return steps


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_every_generated_problem_is_correct(seed: int) -> None:
    problems = generate_problems(1500, seed)
    assert len(problems) == 1500
    for p in problems:
        check_problem(p)
    assert {p["template"] for p in problems} == set(TEMPLATES) == ONE_STEP | TWO_STEP


def test_heldout_problems_are_correct() -> None:
    for p in heldout_problems():
        check_problem(p)


def test_operand_ranges() -> None:
    for p in generate_problems(3000, 3):
        (a, op, b, result), *rest = check_problem(p)
        if p["template"] in {"add", "sub", "add_sub", "sub_add"}:
            assert 10 <= a <= 99 and 10 <= b <= 99
        if op == "-":
            assert a > b
        if op == "*":
            assert 2 <= a <= 30 and 2 <= b <= 9
        if op == "/":
            assert 2 <= b <= 9 and 2 <= result <= 30 and a == b * result
        for _, _, c, _ in rest:
            assert 10 <= c <= 99


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    assert generate_problems(300, 5) == generate_problems(300, 5)
    assert generate_problems(300, 5) != generate_problems(300, 6)


@pytest.mark.parametrize(
    ("templates", "expected"),
    [("one_step", ONE_STEP), ("two_step", TWO_STEP), ("mul", {"mul"}), (["div", "sub_add"], {"div", "sub_add"})],
)
def test_template_selection(templates, expected: set[str]) -> None:
    problems = generate_problems(400, 0, templates=templates)
    assert {p["template"] for p in problems} == expected


def test_unknown_template_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"unknown arithmetic subset.*'three_step'.*known: one_step"):
        generate_problems(1, 0, templates="three_step")


def test_exclude_skips_questions() -> None:
    first = generate_problems(50, 9)
    excluded = frozenset(p["question"] for p in first[:10])
    kept = generate_problems(50, 9, exclude=excluded)
    assert len(kept) == 50 and not excluded & {p["question"] for p in kept}


def test_heldout_is_fixed_distinct_and_prefix_stable() -> None:
    heldout = heldout_problems()
    assert len(heldout) == HELDOUT_SIZE == len({p["question"] for p in heldout})
    assert heldout_problems(50) == heldout[:50]
    # Frozen: changing the held-out set silently invalidates every evaluation made before.
    digest = hashlib.sha256("\n".join(p["question"] for p in heldout).encode()).hexdigest()
    assert digest == HELDOUT_DIGEST, "the held-out set changed; if on purpose, update HELDOUT_DIGEST"
    with pytest.raises(ValueError, match="held-out set has 200"):
        heldout_problems(HELDOUT_SIZE + 1)


# HELDOUT_SEED starts the same stream as the held-out set: exclusion must do all the work there.
@pytest.mark.parametrize("seed", [0, 1, 2, 1234, HELDOUT_SEED])
def test_training_never_contains_a_heldout_question(seed: int) -> None:
    heldout = {p["question"] for p in heldout_problems()}
    training = training_problems(5000, seed)
    assert len(training) == 5000
    assert not heldout & {p["question"] for p in training}


def test_generator_imports_without_datasets() -> None:
    code = "import sys, grpo_ray.data.arithmetic; print('datasets' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
