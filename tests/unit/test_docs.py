"""The docs site builds with every link and anchor resolved, and the README stays short and true.

``mkdocs.yml`` sets ``strict: true`` and makes broken links, missing anchors and pages left out of the
nav warnings, so a clean ``mkdocs build --strict`` is the link check for ``docs/``. README.md and
examples/README.md are not part of the site: their relative links (and the headings they point at) are
checked here, and so are the two set-up commands the README promises.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 260
SETUP_COMMANDS = (
    "bash scripts/install.sh && .venv/bin/grpo-ray train --config examples/tiny_cpu.yaml",
    "bash scripts/install.sh && .venv/bin/python -m pytest -n 2",
)
# [text](target) outside code; the target stops at whitespace or the closing parenthesis
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def readme_links(text: str) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return LINK.findall(text)


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    # mkdocs (pinned in constraints/) comes with the test extra; without it this fails saying so
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    if proc.returncode != 0:
        print(proc.stdout)
        print(proc.stderr)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines, over {MAX_README_LINES}: move detail to docs/"


@pytest.mark.parametrize("command", SETUP_COMMANDS)
def test_readme_has_the_setup_command(command: str) -> None:
    assert command in README.read_text(), f"README.md lost the set-up command {command!r}"


def test_ci_runs_the_readmes_test_command() -> None:
    install, tests = SETUP_COMMANDS[1].split(" && ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and f"\n{tests}\n" in ci, ".ci/run no longer runs the README's test command"


def heading_anchors(markdown_file: Path) -> set[str]:
    """The ids mkdocs gives the headings of ``markdown_file`` (Python-Markdown's toc slugify)."""
    from markdown.extensions.toc import slugify

    text = FENCE.sub("", markdown_file.read_text())
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE)
    return {slugify(heading.replace("`", "").strip(), "-") for heading in headings}


@pytest.mark.parametrize("page", ["README.md", "examples/README.md"])
def test_relative_links_point_at_files_and_headings(page: str) -> None:
    source = ROOT / page
    links = readme_links(source.read_text())
    assert links, f"{page} links to no docs page"
    missing = []
    for target in links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the page itself
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve()
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in heading_anchors(file)):
            missing.append(target)
    assert not missing, f"{page} links to files or headings that do not exist: {missing}"


def test_the_link_finder_sees_links_and_skips_code() -> None:
    text = "See [Training](docs/training.md#metrics) and `[not](a link)`.\n```\n[also](not.md)\n```\n"
    assert readme_links(text) == ["docs/training.md#metrics"]
