"""``hipchat-addon new NAME``: a project folder that serves and passes its own tests at once.

The templates ship inside the package (``addon/templates/new``, package data in the wheel). A file
``x.tmpl`` becomes ``x`` and ``dot-x`` becomes ``.x``, so the templates are neither linted,
collected by pytest, nor hidden from the wheel; ``{{key}}``, ``{{name}}`` and ``{{version}}`` are
replaced in every file.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from addon.errors import ConfigError

__all__ = ["create_project", "project_files"]

_KEY = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_KEY = 64


def create_project(name: str, parent: Path) -> int:
    """Write the project ``name`` into ``parent/name``; raise ``ConfigError`` on a bad name."""
    if len(name) > MAX_KEY or not _KEY.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a valid add-on key; use lowercase letters, digits and single "
            f"dashes, starting with a letter (at most {MAX_KEY} characters), e.g. my-addon"
        )
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty; pick another NAME")
    for relative, text in project_files(name).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    sys.stdout.write(_NEXT_STEPS.format(name=name))
    return 0


def project_files(key: str) -> dict[str, str]:
    """Every file of the project ``key``, by relative path, with the placeholders filled in."""
    values = {"key": key, "name": _title(key), "version": _version()}
    out: dict[str, str] = {}
    for relative, template in _walk(files("addon") / "templates" / "new", ""):
        text = template.read_text(encoding="utf-8")
        for placeholder, value in values.items():
            text = text.replace("{{" + placeholder + "}}", value)
        out[relative] = text
    return out


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        name = entry.name.removesuffix(".tmpl")
        name = "." + name.removeprefix("dot-") if name.startswith("dot-") else name
        if entry.is_dir():
            found += _walk(entry, f"{prefix}{name}/")
        else:
            found.append((prefix + name, entry))
    return found


def _title(key: str) -> str:
    return " ".join(part.capitalize() for part in key.split("-"))


def _version() -> str:
    try:
        return version("hipchat-addon")
    except PackageNotFoundError:
        return "0.1.0"


_NEXT_STEPS = """Created {name}/, an add-on project with a /hello command. Next:

    cd {name}
    pip install -r requirements-dev.txt   # the server, pytest and anyio (in a virtualenv)
    hipchat-addon dev        # try it in the playground, with a fake HipChat
    hipchat-addon serve      # serve it on http://localhost:8000
    pytest                   # run its tests
"""
