"""The install's promises: every runtime dependency is one the package uses, and the package imports
nothing that only the tests install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "grpo_ray"
# distribution -> how the package uses it, where the import name differs
USED_AS = {"pyyaml": r"import yaml", "tensorboard": r"torch\.utils\.tensorboard", "ray": r"(import|from) ray\b"}
TEST_ONLY = ("trl", "openai", "httpx", "pytest", "mkdocs")


def _sources() -> str:
    return "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))


def _runtime_dependencies() -> list[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.match(r"[A-Za-z0-9_.-]+", d).group().lower() for d in deps]


@pytest.mark.parametrize("dist", _runtime_dependencies())
def test_every_runtime_dependency_is_used(dist: str) -> None:
    pattern = USED_AS.get(dist, rf"(import|from) {re.escape(dist.replace('-', '_'))}\b")
    assert re.search(pattern, _sources()), f"{dist} is a runtime dependency that grpo_ray never imports"


@pytest.mark.parametrize("module", TEST_ONLY)
def test_the_package_imports_nothing_only_the_tests_install(module: str) -> None:
    found = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
             if re.search(rf"^\s*(import|from) {module}\b", p.read_text(), re.MULTILINE)]
    assert not found, f"{module} is installed only for the tests, but {found} import it"
