"""JSON input with a nesting cap: every JSON the add-on accepts goes through here.

Python's parser and encoder recurse, so a document nested a thousand levels deep can be stored
and then never be written out again (``RecursionError``). ``MAX_DEPTH`` is far beyond what any
real document needs. The text is measured before it is parsed, so nothing deep is ever built.
"""

from __future__ import annotations

import json
import re
from typing import Any

from addon.errors import RequestError

__all__ = ["MAX_DEPTH", "MAX_VALUE_DEPTH", "check_depth", "is_json", "loads"]

MAX_DEPTH = 64
# A stored value sits three levels down in an export ({"storage": {"owner/name": {name: value}}}),
# so that anything stored can be exported and imported again.
MAX_VALUE_DEPTH = MAX_DEPTH - 3
# Two linear passes stand in for one string pattern: drop every escape pair, then every string.
# (The single pattern '"(?:[^"\\]|\\.)*"' retries from each quote of an unterminated string:
# quadratic, seconds of event loop for a 40 KB body of escaped quotes.)
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_BRACKET = re.compile(r"[\[\]{}]")


def loads(text: str | bytes | bytearray, *, what: str = "The request body") -> Any:
    """Parse JSON ``text``; ``RequestError`` when it is not JSON or nests deeper than MAX_DEPTH."""
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"{what} is not valid UTF-8 JSON") from None
    if _depth_of_text(text) > MAX_DEPTH:
        raise RequestError(f"{what} nests deeper than {MAX_DEPTH} levels; flatten it")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError(f"{what} is not valid JSON") from None


def check_depth(value: object, *, what: str, max_depth: int = MAX_DEPTH) -> None:
    """``RequestError`` when ``value`` (lists, dicts, scalars) nests deeper than ``max_depth``."""
    level: list[object] = [value]
    for _ in range(max_depth):
        level = [
            child
            for item in level
            if isinstance(item, list | tuple | dict)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    if any(isinstance(item, list | tuple | dict) for item in level):
        raise RequestError(f"{what} nests deeper than {max_depth} levels; flatten it")


def is_json(text: str) -> bool:
    """True when ``text`` is JSON, however deep (deeper than Python parses: balanced brackets)."""
    try:
        json.loads(text)
    except ValueError:
        return False
    except RecursionError:
        return _is_balanced(text)
    return True


def _is_balanced(text: str) -> bool:
    pairs, stack = {"]": "[", "}": "{"}, []
    for bracket in _BRACKET.finditer(_without_strings(text)):
        char = bracket.group()
        if char in "[{":
            stack.append(char)
        elif not stack or stack.pop() != pairs[char]:
            return False
    return not stack


def _depth_of_text(text: str) -> int:
    """How deep the brackets of JSON ``text`` nest (strings skipped); stops past MAX_DEPTH."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_without_strings(text)):
        if bracket.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        else:
            depth -= 1
    return deepest


def _without_strings(text: str) -> str:
    """``text`` with every JSON string emptied, in linear time (escapes first, then strings)."""
    return _STRING.sub('""', _ESCAPE.sub("", text))
