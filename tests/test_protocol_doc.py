"""docs/protocol.md is the protocol the code cites, and user-facing strings cite no section.

The code cites the protocol document by heading ("docs/protocol.md, Webhook payloads"); every
cited heading must exist, so a renamed heading breaks here rather than leaving a dangling pointer.
Messages (every string literal that is not a docstring) name the field and the fix, never a
section number of a document.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "protocol.md"
SOURCES = ("addon", "integrations", "tests")
CITATION = re.compile(r"protocol\.md, ([A-Z][A-Za-z -]*?)(?=[).;:,]|$)", re.MULTILINE)


def _python_files() -> Iterator[Path]:
    for top in SOURCES:
        yield from sorted((ROOT / top).rglob("*.py"))


def _headings() -> set[str]:
    lines = PROTOCOL.read_text(encoding="utf-8").splitlines()
    return {line.lstrip("#").strip() for line in lines if line.startswith("#")}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of ``tree`` (module, class, function, attribute)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                found.add(id(stmt.value))
    return found


def test_every_cited_heading_exists() -> None:
    headings = _headings()
    cited = 0
    for path in _python_files():
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            for name in match.group(1).split(" and "):
                cited += 1
                assert name.strip() in headings, f"{path.relative_to(ROOT)} cites {name!r}"
    assert cited > 30


def test_headings_are_unique() -> None:
    lines = PROTOCOL.read_text(encoding="utf-8").splitlines()
    names = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    assert len(names) == len(set(names))


def test_no_string_literal_cites_a_section_number() -> None:
    offenders: list[str] = []
    for path in _python_files():
        if path == Path(__file__).resolve():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and "§" in node.value
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []
