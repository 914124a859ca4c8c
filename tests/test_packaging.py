"""The wheel works outside the repo: built, installed into a fresh virtualenv, used from nowhere.

This is the path of a new user: ``pip install hipchat-addon``, ``hipchat-addon new demo``,
``cd demo``, ``hipchat-addon check``, ``pytest``. It costs about half a minute (the build and the
install), hence the ``system`` marker; CI runs it with the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADDON_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.system
def test_the_wheel_scaffolds_checks_and_tests_a_project_in_a_fresh_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(wheels)], tmp_path)
    [wheel] = wheels.glob("hipchat_addon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "addon/templates/new/capabilities/addon.json.tmpl" in names
    assert "addon/py.typed" in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python, command = venv / "bin" / "python", str(venv / "bin" / "hipchat-addon")
    run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "hipchat-addon" in run([command, "--version"], empty).stdout
    run([command, "new", "demo"], empty)
    demo = empty / "demo"
    assert "configuration OK: demo" in run([command, "check"], demo).stdout
    # The project's own requirements bring its test tools; hipchat-addon is the wheel (as the
    # Dockerfile's --find-links would take it), already installed.
    shutil.copy(wheel, demo / "wheels")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--find-links", "wheels"]
    run([*pip, "--requirement", "requirements-dev.txt"], demo)
    tests = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], demo)
    assert "1 passed" in tests.stdout
    located = run([str(python), "-c", "import addon; print(addon.__file__)"], demo).stdout
    assert located.startswith(str(venv)), "the test must use the installed wheel, not the repo"


def test_the_readme_installs_into_the_virtualenv_scripts_install_uses() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    [install] = [b.strip() for b in blocks if "pip install" in b and "hipchat-addon serve" in b]
    steps = install.split(" && ")
    assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    assert steps.index(". .venv/bin/activate") < steps.index("pip install -e .")
    assert 'venv="${VIRTUAL_ENV:-$PWD/.venv}"' in (REPO / "scripts" / "install").read_text()
    assert "scripts/test" in [b.strip() for b in blocks]
    assert "\nexec scripts/test\n" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
