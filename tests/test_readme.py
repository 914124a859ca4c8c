"""The README's "Test your integration" example runs as written, on the README's own integration.

Both snippets are taken from README.md as they stand: the first ```python block under
"## Writing an integration" becomes ``integrations/echo.py`` and the first under
"## Test your integration" becomes ``tests/test_echo.py`` of a fresh project, in which
``python -m pytest`` runs with this interpreter, as an integration author would run it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

README = REPO / "README.md"


def python_block(markdown: str, heading: str) -> str:
    """The first ```python block after ``heading`` (and before the next heading of its level)."""
    level = heading.split(" ")[0]
    start = markdown.index(f"\n{heading}\n")
    following = re.search(rf"\n{level} ", markdown[start + 1 :])
    section = markdown[start : start + 1 + following.start()] if following else markdown[start:]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, f"README.md has no ```python block under {heading!r}"
    return block.group(1)


def test_the_readme_blocks_are_found() -> None:
    markdown = README.read_text(encoding="utf-8")
    assert python_block(markdown, "## Writing an integration").startswith(
        "# integrations/echo.py\n"
    )
    assert python_block(markdown, "## Test your integration").startswith("# tests/test_echo.py\n")


def test_the_readme_test_example_passes_as_written(tmp_path: Path) -> None:
    markdown = README.read_text(encoding="utf-8")
    for folder in ("integrations", "capabilities", "tests"):
        (tmp_path / folder).mkdir()
    (tmp_path / "integrations" / "echo.py").write_text(
        python_block(markdown, "## Writing an integration")
    )
    (tmp_path / "capabilities" / "addon.json").write_text(
        (REPO / "capabilities" / "addon.json").read_text()
    )
    (tmp_path / "tests" / "test_echo.py").write_text(
        python_block(markdown, "## Test your integration")
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-W", "error", "-p", "no:cacheprovider", "-rA"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.findall(r"^PASSED (\S+)", output, re.M) == [
        "tests/test_echo.py::test_echo",
        "tests/test_echo.py::test_echo_in_a_room_installation",
    ], output
