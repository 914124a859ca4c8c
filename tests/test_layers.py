"""The import-linter contract (pyproject.toml) holds, and breaks when a layer imports upwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "addon", tmp_path / "addon", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, so the contract is checked against it, not the repo.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_contract_is_kept(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        pytest.param("store/base.py", "import addon.app", "Layers", id="store imports app"),
        pytest.param("dispatch.py", "import starlette.requests", "Starlette", id="starlette"),
        pytest.param("wire.py", "import sqlite3", "redis and sqlite3", id="sqlite3 in wire"),
    ],
)
def test_the_contract_breaks_on_a_forbidden_import(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    root = _copy(tmp_path)
    _append(root / "addon" / module, line)
    result = _lint(root)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


def _layers() -> dict[str, int]:
    """Each module of the layers contract and its layer, 0 the top."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(
        c for c in pyproject["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    return {
        name.strip().removeprefix("addon."): index
        for index, layer in enumerate(contract["layers"])
        for name in layer.split(":")
    }


def test_the_readmes_walk_of_a_webhook_goes_only_down_the_layers() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How it fits together", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`([a-z_]+)(?:\.py|/)`", section)
    assert named and all(
        (REPO / "addon" / f"{name}.py").exists() or (REPO / "addon" / name).is_dir()
        for name in named
    ), named
    # The numbered steps, each a module calling only what sits below it: app, routes, dispatch,
    # then the store and the REST client.
    steps = re.findall(r"^\d+\. `([a-z_]+)(?:\.py|/)`", section, flags=re.MULTILINE)
    layers = _layers()
    assert steps == ["app", "routes", "dispatch", "store"]
    assert [layers[step] for step in steps] == sorted({layers[step] for step in steps})
