"""The built-in arithmetic task: GSM8K-style word problems generated from a seed.

Seven templates, four with one step (``a + b``, ``a - b``, ``a * b``, exact ``a / b``) and three with
two (``a + b - c``, ``a * b + c``, ``a - b + c``). Each problem is a dict::

    question  "Ava has 23 marbles. Ava gets 48 more marbles. How many marbles does Ava have now?"
    answer    "71"                      final integer, as a string (what rewards compare against)
    solution  "23 + 48 = 71\\n#### 71"   GSM8K style: one line per step, then the final answer
    reasoning "23 + 48 = 71"            the step lines only (an SFT warm-up target)
    steps     1 or 2
    template  "add" | "sub" | "mul" | "div" | "add_sub" | "mul_add" | "sub_add"

Every number in a question appears in the solution in the same order (first step: both operands,
second step: the new operand), so a question can be checked against its solution by text alone.

A fixed held-out set (``heldout_problems``) comes from its own seed; ``training_problems`` never
yields a held-out question, compared by exact text. The generator needs only the standard
library (``datasets`` is imported lazily by the loader), so tokenizer and model builders can use it
cheaply.

As the built-in dataset "arithmetic": split "train" = ``training_problems(limit or 20000, seed)``,
"test" = the held-out problems; ``subset`` = "one_step", "two_step" or a template name.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grpo_ray.data.catalog import BuiltinDataset, LoadRequest, register_dataset

if TYPE_CHECKING:
    import datasets

HELDOUT_SEED = 1_000_003
HELDOUT_SIZE = 200
DEFAULT_TRAIN_SIZE = 20_000

NAMES = ("Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack")
ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "books", "coins")
CONTAINERS = ("bags", "boxes", "jars", "baskets")

Step = tuple[int, str, int, int]  # left, operator, right, result


@dataclass(frozen=True)
class _Template:
    name: str
    steps: int
    # (rng) -> operands; drawn so that every intermediate and final result is a positive integer
    draw: Callable[[random.Random], tuple[int, ...]]
    # (operands) -> [(left, op, right, result)], one tuple per step
    solve: Callable[[tuple[int, ...]], list[Step]]
    text: str  # str.format fields: name, items, box, a, b, c


def _two_digit(rng: random.Random) -> int:
    return rng.randint(10, 99)


def _draw_difference(rng: random.Random) -> tuple[int, int]:
    a = rng.randint(11, 99)
    return a, rng.randint(10, a - 1)  # a > b: results stay positive


def _draw_product(rng: random.Random) -> tuple[int, int]:
    return rng.randint(2, 30), rng.randint(2, 9)


def _draw_quotient(rng: random.Random) -> tuple[int, int]:
    divisor, quotient = rng.randint(2, 9), rng.randint(2, 30)
    return divisor * quotient, divisor  # exact division by construction


def _draw_add_sub(rng: random.Random) -> tuple[int, int, int]:
    a, b = _two_digit(rng), _two_digit(rng)
    return a, b, rng.randint(10, min(99, a + b - 1))


def _steps_add(o: tuple[int, ...]) -> list[Step]:
    return [(o[0], "+", o[1], o[0] + o[1])]


def _steps_sub(o: tuple[int, ...]) -> list[Step]:
    return [(o[0], "-", o[1], o[0] - o[1])]


def _steps_mul(o: tuple[int, ...]) -> list[Step]:
    return [(o[0], "*", o[1], o[0] * o[1])]


def _steps_div(o: tuple[int, ...]) -> list[Step]:
    return [(o[0], "/", o[1], o[0] // o[1])]


def _chain(
    first: Callable[[tuple[int, ...]], list[Step]], op: str, value: Callable[[int, int], int]
) -> Callable[[tuple[int, ...]], list[Step]]:
    """A two-step solver: ``first`` on (a, b), then ``op`` with c on its result."""

    def solve(o: tuple[int, ...]) -> list[Step]:
        (step,) = first(o[:2])
        return [step, (step[3], op, o[2], value(step[3], o[2]))]

    return solve


TEMPLATES: dict[str, _Template] = {
    t.name: t
    for t in (
        _Template(
            "add",
            1,
            lambda r: (_two_digit(r), _two_digit(r)),
            _steps_add,
            "{name} has {a} {items}. {name} gets {b} more {items}. How many {items} does {name} have now?",
        ),
        _Template(
            "sub",
            1,
            _draw_difference,
            _steps_sub,
            "{name} has {a} {items}. {name} gives {b} {items} to a friend. How many {items} does {name} have left?",
        ),
        _Template(
            "mul",
            1,
            _draw_product,
            _steps_mul,
            "{name} has {a} {box} with {b} {items} in each. How many {items} does {name} have in total?",
        ),
        _Template(
            "div",
            1,
            _draw_quotient,
            _steps_div,
            "{name} shares {a} {items} equally among {b} friends. How many {items} does each friend get?",
        ),
        _Template(
            "add_sub",
            2,
            _draw_add_sub,
            _chain(_steps_add, "-", lambda x, c: x - c),
            "{name} has {a} {items}, gets {b} more, then gives away {c}. How many {items} does {name} have now?",
        ),
        _Template(
            "mul_add",
            2,
            lambda r: (*_draw_product(r), _two_digit(r)),
            _chain(_steps_mul, "+", lambda x, c: x + c),
            "{name} has {a} {box} with {b} {items} in each and {c} more {items} on a shelf. "
            "How many {items} does {name} have in total?",
        ),
        _Template(
            "sub_add",
            2,
            lambda r: (*_draw_difference(r), _two_digit(r)),
            _chain(_steps_sub, "+", lambda x, c: x + c),
            "{name} has {a} {items}, gives away {b}, then gets {c} more. How many {items} does {name} have now?",
        ),
    )
}

SUBSETS: dict[str, tuple[str, ...]] = {
    "one_step": tuple(n for n, t in TEMPLATES.items() if t.steps == 1),
    "two_step": tuple(n for n, t in TEMPLATES.items() if t.steps == 2),
}


def resolve_templates(subset: str | Iterable[str] | None) -> tuple[str, ...]:
    """Template names for ``None`` (all), a subset name ("one_step", "two_step"), a template name
    or an iterable of template names. Unknown names raise a one-line ``ValueError``."""
    if subset is None:
        return tuple(TEMPLATES)
    if isinstance(subset, str):
        if subset in SUBSETS:
            return SUBSETS[subset]
        names: tuple[str, ...] = (subset,)
    else:
        names = tuple(subset)
    unknown = [n for n in names if n not in TEMPLATES]
    if unknown or not names:
        known = ", ".join([*SUBSETS, *TEMPLATES])
        raise ValueError(f"unknown arithmetic subset or template {unknown or names!r}; known: {known}")
    return names


def make_problem(template: str, rng: random.Random) -> dict:
    """One problem from ``template``, drawing operands and wording from ``rng``."""
    spec = TEMPLATES[template]
    operands = spec.draw(rng)
    fields = {"name": rng.choice(NAMES), "items": rng.choice(ITEMS), "box": rng.choice(CONTAINERS)}
    fields.update(zip("abc", operands))
    lines = [f"{left} {op} {right} = {result}" for left, op, right, result in spec.solve(operands)]
    answer = lines[-1].rsplit(" = ", 1)[1]
    reasoning = "\n".join(lines)
    return {
        "question": spec.text.format(**fields),
        "answer": answer,
        "solution": f"{reasoning}\n#### {answer}",
        "reasoning": reasoning,
        "steps": spec.steps,
        "template": template,
    }


def _iter_problems(seed: int, templates: tuple[str, ...]) -> Iterator[dict]:
    rng = random.Random(seed)
    while True:
        yield make_problem(rng.choice(templates), rng)


def generate_problems(
    n: int,
    seed: int,
    *,
    templates: str | Iterable[str] | None = None,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[dict]:
    """``n`` problems (dicts as in the module docstring), deterministic in ``seed``.

    ``templates`` picks which (see ``resolve_templates``); questions whose text is in ``exclude``
    are skipped and replaced. Duplicates are allowed: training draws fresh problems, not a set.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    problems: list[dict] = []
    for problem in _iter_problems(seed, resolve_templates(templates)):
        if len(problems) == n:
            break
        if problem["question"] not in exclude:
            problems.append(problem)
    return problems


def heldout_problems(n: int = HELDOUT_SIZE) -> list[dict]:
    """The first ``n`` of the fixed held-out set: ``HELDOUT_SIZE`` distinct questions over all
    templates, the same on every machine and in every run. ``n`` above that size raises, since
    training only excludes those ``HELDOUT_SIZE`` questions."""
    if not 0 <= n <= HELDOUT_SIZE:
        raise ValueError(f"the arithmetic held-out set has {HELDOUT_SIZE} problems; asked for {n}")
    seen: dict[str, dict] = {}
    for problem in _iter_problems(HELDOUT_SEED, tuple(TEMPLATES)):
        if len(seen) == n:
            break
        seen.setdefault(problem["question"], problem)
    return list(seen.values())


def heldout_questions() -> frozenset[str]:
    """The text of every held-out question."""
    return frozenset(p["question"] for p in heldout_problems(HELDOUT_SIZE))


def training_problems(
    n: int = DEFAULT_TRAIN_SIZE, seed: int = 0, *, templates: str | Iterable[str] | None = None
) -> list[dict]:
    """``n`` problems for training: ``generate_problems`` with every held-out question excluded."""
    return generate_problems(n, seed, templates=templates, exclude=heldout_questions())


def load_arithmetic(request: LoadRequest) -> datasets.Dataset:
    """Records for the built-in dataset: columns question, answer, solution, reasoning, steps,
    template. "train" has ``request.limit`` rows (default 20000); "test" the held-out problems of
    the chosen templates."""
    import datasets

    from grpo_ray.data.sources import DataSourceError

    if request.data_dir is not None:
        raise DataSourceError("arithmetic: the task is generated; data_dir does not apply")
    try:
        templates = resolve_templates(request.subset)
    except ValueError as err:
        raise DataSourceError(f"arithmetic: {err}") from err
    if request.split == "train":
        n = DEFAULT_TRAIN_SIZE if request.limit is None else request.limit
        problems = training_problems(n, request.seed, templates=templates)
    elif request.split == "test":
        problems = [p for p in heldout_problems() if p["template"] in templates]
    else:
        raise DataSourceError(f"arithmetic: unknown split {request.split!r}; known: train, test")
    return datasets.Dataset.from_list(problems)


ARITHMETIC = register_dataset(BuiltinDataset("arithmetic", load_arithmetic))
