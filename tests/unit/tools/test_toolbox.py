"""Tools from a user's file and environments, run by the Toolbox: schemas from type hints and
docstrings, a raising tool's error handed back as its output, a hanging one killed at its timeout,
and one environment instance per episode. Real child processes, no Ray."""

from __future__ import annotations

import time

import pytest

from grpo_ray.tools import ToolSpecError, resolve_environment, resolve_tool
from grpo_ray.tools.process import Toolbox
from tests.unit.tools.sources import COUNTER_ENV

pytestmark = pytest.mark.unit

USER_TOOLS = '''
import time


def lookup(city: str) -> str:
    """The population of a city.

    Args:
        city: The city's name.
    """
    return {"Paris": "2.1 million"}.get(city, "unknown")


def broken(x: int) -> int:
    """Always fails.

    Args:
        x: Anything.
    """
    raise RuntimeError("the lookup service is down")


def hangs(x: int) -> int:
    """Never returns.

    Args:
        x: Anything.
    """
    while True:
        time.sleep(0.1)


def undocumented(x):
    return x


''' + COUNTER_ENV


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tools") / "my_tools.py"
    path.write_text(USER_TOOLS)
    return path


def test_a_user_tools_schema_comes_from_its_hints_and_docstring(user_file) -> None:
    tool = resolve_tool(f"{user_file}:lookup")
    assert tool.name == "lookup" and not tool.in_process
    assert tool.schema["function"]["parameters"]["properties"]["city"] == {"type": "string", "description": "The city's name."}


@pytest.mark.parametrize("spec, why", [
    ("undocumented", "has no docstring"), ("missing", "has no 'missing'"), ("Counter", "is a class"),
])
def test_bad_tool_specs_are_one_line(user_file, spec, why) -> None:
    with pytest.raises(ToolSpecError, match=why) as err:
        resolve_tool(f"{user_file}:{spec}")
    assert "\n" not in str(err.value)
    with pytest.raises(ToolSpecError, match="unknown tool 'calculater'.*did you mean 'calculator'"):
        resolve_tool("calculater")


def test_a_raising_tool_answers_with_its_error_and_a_hanging_one_is_killed(user_file) -> None:
    box = Toolbox([resolve_tool(f"{user_file}:{name}") for name in ("lookup", "broken", "hangs")] + [resolve_tool("calculator")],
                  timeout_s=1.0, processes=1)
    try:
        assert box.call(0, "lookup", {"city": "Paris"}).content == "2.1 million"
        failed = box.call(0, "broken", {"x": 1})
        assert failed.status == "error" and "the lookup service is down" in failed.content
        pid = box._procs[0].pid
        start = time.perf_counter()
        hung = box.call(0, "hangs", {"x": 1})
        assert hung.status == "timeout" and time.perf_counter() - start < 5
        assert box._procs[0].pid is None  # killed with its process
        assert box.call(0, "lookup", {"city": "Rome"}).content == "unknown"  # a fresh process answers
        assert box._procs[0].pid not in (None, pid)
        wrong = box.call(0, "lookup", {"town": "Paris"})
        assert wrong.status == "error" and "town" in wrong.content  # the model called it wrong: it learns why
        assert box.call(0, "calculator", {"expression": "6 * 7"}).content == "42"
        assert box.call(0, "nope", {}).status == "error"
    finally:
        box.shutdown()


def test_each_episode_has_its_own_environment(user_file) -> None:
    env = resolve_environment(f"{user_file}:Counter")
    box = Toolbox([], env, timeout_s=5.0, processes=2)
    try:
        assert [s["function"]["name"] for s in box.schemas()] == ["add"]
        assert box.open(0, {"start": 10}) == "The count starts at 10."
        assert box.open(1, {"start": 0}) == "The count starts at 0."
        assert box.open(2, {"start": 5}) == "The count starts at 5."  # the same process as episode 0
        assert [box.call(0, "add", {"n": 1}).content, box.call(1, "add", {"n": 2}).content,
                box.call(2, "add", {"n": 3}).content, box.call(0, "add", {"n": 1}).content] == ["11", "2", "8", "12"]
    finally:
        box.shutdown()
    with pytest.raises(ToolSpecError, match="not a class"):
        resolve_environment(f"{user_file}:lookup")
