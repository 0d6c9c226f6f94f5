"""The built-in ``calculator`` tool: exact arithmetic, without evaluating code.

The expression is parsed with Python's own parser into a syntax tree, and only numbers, parentheses,
unary signs and the operators + - * / // % ** are walked; anything else (names, calls, attributes,
strings) is refused. Numbers are exact fractions (``0.1 + 0.2`` is ``0.3``), powers are bounded so a
request cannot exhaust memory, and the result is written as an integer, a terminating decimal, or a
decimal rounded to 12 significant digits. An expression written with its expected result
(``"15 - 6 = 9"``) is computed from its left side.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_DIGITS = 2000

# what people (and models) write that Python spells otherwise
_SPELLINGS = [(re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""), (re.compile(r"[×x](?=\s*[\d(])"), "*"),
              (re.compile(r"÷"), "/"), (re.compile(r"\^"), "**"), (re.compile(r"−"), "-")]


class CalculatorError(ValueError):
    """The expression is not arithmetic the calculator can do; the message says why."""


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: The arithmetic to do, e.g. "12 * (3 + 4) / 5". Numbers, parentheses and + - * / // % ** only.

    Returns:
        The exact value: an integer, a decimal, or a decimal rounded to 12 significant digits.
    """
    return format_number(evaluate(expression))


def evaluate(expression: str) -> Fraction:
    """``expression``'s exact value (:class:`CalculatorError` when it is not plain arithmetic)."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, not {type(expression).__name__}")
    # "15 - 6 = 9" (a model writing its guess after the expression): the left side is what to compute
    text = expression.split("=")[0].strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    for pattern, replacement in _SPELLINGS:
        text = pattern.sub(replacement, text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    return _Evaluator(text).visit(tree.body)


class _Evaluator:
    def __init__(self, source: str) -> None:
        self.source = source

    def visit(self, node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            # the literal as written, so 0.1 is one tenth, not the float nearest to it
            return Fraction(ast.get_source_segment(self.source, node).replace("_", ""))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = self.visit(node.operand)
            return value if isinstance(node.op, ast.UAdd) else -value
        if isinstance(node, ast.BinOp):
            return self._binary(node.op, self.visit(node.left), self.visit(node.right))
        raise CalculatorError(f"only numbers and + - * / // % ** are allowed, not {_describe(node)}")

    @staticmethod
    def _binary(op: ast.operator, a: Fraction, b: Fraction) -> Fraction:
        if isinstance(op, ast.Add):
            return a + b
        if isinstance(op, ast.Sub):
            return a - b
        if isinstance(op, ast.Mult):
            return _bounded(a * b)
        if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)):
            if b == 0:
                raise CalculatorError("division by zero")
            if isinstance(op, ast.Div):
                return a / b
            return Fraction(a // b) if isinstance(op, ast.FloorDiv) else a % b
        if isinstance(op, ast.Pow):
            if b.denominator != 1:
                raise CalculatorError("only whole-number powers are exact")
            if abs(b) > MAX_EXPONENT:
                raise CalculatorError(f"exponent over {MAX_EXPONENT}")
            if a == 0 and b < 0:
                raise CalculatorError("division by zero")
            if a not in (0, 1, -1) and abs(b) * max(len(str(abs(a.numerator))), len(str(a.denominator))) > MAX_DIGITS:
                raise CalculatorError(f"result over {MAX_DIGITS} digits")
            return a ** int(b)
        raise CalculatorError(f"operator {type(op).__name__} is not allowed")


def _bounded(value: Fraction) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"result over {MAX_DIGITS} digits")
    return value


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Constant):
        return f"the value {node.value!r}"
    return type(node).__name__


def format_number(value: Fraction, significant: int = 12) -> str:
    """An integer as it is; a fraction as its exact decimal when it has one, else rounded.

    >>> format_number(Fraction(15, 2)), format_number(Fraction(-4)), format_number(Fraction(1, 3))
    ('7.5', '-4', '0.333333333333')
    """
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:  # a terminating decimal: write it exactly
        digits, scale = value, 0
        while digits.denominator != 1:
            digits *= 10
            scale += 1
        sign = "-" if digits < 0 else ""
        text = str(abs(digits.numerator)).rjust(scale + 1, "0")
        return f"{sign}{text[:-scale]}.{text[-scale:]}"
    return f"{float(value):.{significant}g}"
