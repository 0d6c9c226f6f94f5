"""The calculator tool: exact arithmetic on a syntax tree, and refusals that say why."""

from __future__ import annotations

import pytest

from grpo_ray.tools.calculator import CalculatorError, calculator

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("expression, value", [
    ("12 * (3 + 4) / 5", "16.8"), ("0.1 + 0.2", "0.3"), ("59 - 63", "-4"), ("7 // 2", "3"), ("7 % 3", "1"),
    ("2 ** 10", "1024"), ("2^10", "1024"), ("1,000 x 3", "3000"), ("10 ÷ 4", "2.5"), ("1/3", "0.333333333333"),
    ("-(-3)", "3"), ("48 / 2 =", "24"), ("2 ** -2", "0.25"), ("1_000 + 1", "1001"), ("18 / 6 = 3.25", "3"),
])
def test_exact_values(expression: str, value: str) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize("expression, why", [
    ("__import__('os').system('true')", "function call"), ("x + 1", "the name 'x'"), ("'a' * 3", "the value 'a'"),
    ("1 / 0", "division by zero"), ("9 ** 9 ** 9", "exponent over"), ("2 ** 0.5", "whole-number powers"),
    ("", "empty expression"), ("1 +", "not an arithmetic expression"), ("[1, 2]", "List"), ("3 < 4", "Compare"),
    ("= 4", "empty expression"),
])
def test_refusals_say_why(expression: str, why: str) -> None:
    with pytest.raises(CalculatorError, match=why.replace("(", r"\(")):
        calculator(expression)


def test_huge_results_are_refused_before_they_are_built() -> None:
    with pytest.raises(CalculatorError, match="digits"):
        calculator("123456789 ** 999")
