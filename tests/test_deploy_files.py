"""The deployment files agree with each other, with the README and with the package.

Dockerfile, docker-compose.yml, .dockerignore, .ci/run and scripts/* are not run by the rest of
the suite (no Docker engine in CI), so these tests read them, cross-check them, and run the
shell scripts and the health-check one-liners against stubs.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("scripts/install", "scripts/check", "scripts/test", ".ci/run")
HEALTHZ = "http://127.0.0.1:8000/healthz"


# --- readers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction; ``stage`` counts FROM lines, starting at 0."""

    keyword: str
    args: str
    stage: int


def read_dockerfile(text: str) -> list[Instruction]:
    """Instructions with comments dropped and backslash continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if pending + line:
            logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a backslash continuation"
    instructions: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), args.strip(), stage))
    return instructions


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/HEALTHCHECK; fails on shell form."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return [str(v) for v in value]


def flags_and_rest(args: str) -> tuple[dict[str, str], list[str]]:
    """Split leading ``--name=value`` options from the other words."""
    words = shlex.split(args)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words


def readme_commands() -> set[str]:
    """Every line of every fenced code block in README.md, stripped of a ``$ `` prompt."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines: set[str] = set()
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            line = line.strip()
            lines.add(line[2:].strip() if line.startswith("$ ") else line)
    return lines


def dockerignore_patterns() -> list[str]:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching pattern wins)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    value = services[name]
    assert isinstance(value, dict)
    return value


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment in either compose syntax (mapping, or list of KEY=VALUE)."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {k: (v if sep else None) for k, sep, v in pairs}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def words(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def final_stage() -> list[Instruction]:
    instructions = read_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"the Dockerfile's final stage has no {keyword}"
    return found[-1]  # the last one is the one in force


def dockerfile_cmd() -> list[str]:
    return exec_form(only(final_stage(), "CMD").args)


def dockerfile_healthcheck() -> tuple[dict[str, str], list[str]]:
    """The final stage's HEALTHCHECK as (options, exec-form command)."""
    args = only(final_stage(), "HEALTHCHECK").args
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", args, flags=re.DOTALL)
    assert match, f"HEALTHCHECK must run a command: {args}"
    options, _ = flags_and_rest(match[1])
    return options, exec_form(match[2])


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# --- Dockerfile ----------------------------------------------------------------------------------


def test_image_builds_on_python_311_slim() -> None:
    instructions = read_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    bases = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)


def test_image_runs_as_the_non_root_user_it_creates() -> None:
    stage = final_stage()
    user = only(stage, "USER").args.partition(":")[0]
    assert user not in ("", "root", "0")
    created = [i.args for i in stage if i.keyword == "RUN" and "useradd" in i.args]
    assert created, "no RUN creates the user"
    assert re.search(rf"useradd\b[^;&|]*--uid 10001\b[^;&|]*\b{re.escape(user)}\b", created[0])


def test_image_exposes_the_port_the_server_listens_on() -> None:
    exposed = {p.split("/")[0] for p in only(final_stage(), "EXPOSE").args.split()}
    assert "8000" in exposed
    assert option(dockerfile_cmd(), "--port") in exposed


def test_image_cmd_serves_on_all_interfaces_with_the_console_script() -> None:
    cmd = dockerfile_cmd()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert cmd[0] in pyproject["project"]["scripts"]
    assert cmd[1] == "serve"
    assert option(cmd, "--host") == "0.0.0.0"


def test_image_cmd_is_the_one_the_readme_documents() -> None:
    line = shlex.join(dockerfile_cmd())
    assert line in readme_commands(), (
        f"README.md's Docker section must show the container command in a code block: {line}"
    )


def test_image_healthcheck_gets_healthz() -> None:
    options, argv = dockerfile_healthcheck()
    assert argv[:2] == ["python", "-c"], "slim images have no curl: ask python"
    assert HEALTHZ in argv[2]
    assert set(options) <= {"interval", "timeout", "start-period", "start-interval", "retries"}


def test_image_copies_only_files_that_reach_the_build_context() -> None:
    patterns = dockerignore_patterns()
    instructions = read_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    copies = [i for i in instructions if i.keyword in ("COPY", "ADD")]
    sources: list[str] = []
    for copy in copies:
        flags, paths = flags_and_rest(copy.args)
        if "from" not in flags:
            sources += paths[:-1]
    assert {"pyproject.toml", "README.md", "addon/", "capabilities/", "integrations/"} <= set(
        sources
    )
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which is not in the repo"
        if path.is_dir():
            # git keeps no empty directory, so a clean clone (and the image build) would lack it.
            files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            assert files, f"{source} is empty; a clean clone has no such directory"
        assert not dockerignored(source, patterns), f".dockerignore leaves out {source}"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("addon.db", True),
        ("data/addon.db", True),
        ("addon/__pycache__/settings.cpython-311.pyc", True),
        (".mypy_cache/3.11/x.json", True),
        (".ruff_cache/CACHEDIR.TAG", True),
        (".pytest_cache/README.md", True),
        ("addon/settings.py", False),
        ("pyproject.toml", False),
        ("README.md", False),
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str, ignored: bool) -> None:
    assert dockerignored(path, dockerignore_patterns()) is ignored


# --- health-check one-liners, run for real ----------------------------------------------------


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, type[_Healthz]]]:
    handler = type("Handler", (_Healthz,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def healthcheck_commands() -> list[list[str]]:
    _, dockerfile = dockerfile_healthcheck()
    test = words(service("addon")["healthcheck"]["test"])
    assert test[0] == "CMD", "the addon healthcheck must be exec form (CMD ...)"
    return [dockerfile, test[1:]]


@pytest.mark.parametrize("which", [0, 1], ids=["Dockerfile", "compose"])
def test_healthcheck_passes_only_while_healthz_answers_200(
    which: int, healthz_server: tuple[int, type[_Healthz]]
) -> None:
    argv = healthcheck_commands()[which]
    assert argv[:2] == ["python", "-c"] and HEALTHZ in argv[2]
    port, handler = healthz_server

    def run(target: int) -> int:
        code = argv[2].replace("127.0.0.1:8000", f"127.0.0.1:{target}")
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=30
        ).returncode

    assert run(port) == 0
    handler.status = 503
    assert run(port) == 1  # Docker reserves exit 2; 1 means unhealthy
    assert run(_closed_port()) == 1


# --- docker-compose.yml --------------------------------------------------------------------------


def test_compose_runs_the_addon_and_redis() -> None:
    assert set(compose()["services"]) == {"addon", "redis"}
    assert service("addon")["build"] in (".", {"context": "."})


def test_redis_keeps_an_append_only_file_on_a_named_volume() -> None:
    redis = service("redis")
    assert str(redis["image"]).startswith("redis:7")
    command = words(redis["command"])
    assert command[0] == "redis-server"
    assert option(command, "--appendonly") == "yes"
    mounts = [str(v).split(":") for v in redis["volumes"]]
    assert ["redis-data", "/data"] in [m[:2] for m in mounts]
    assert "redis-data" in compose()["volumes"]


def test_redis_healthcheck_pings() -> None:
    test = words(service("redis")["healthcheck"]["test"])
    assert test[0] in ("CMD", "CMD-SHELL") and "redis-cli" in test[1] and "ping" in test[-1]


def test_addon_store_url_points_at_the_redis_service() -> None:
    url = urlsplit(environment(service("addon"))["ADDON_STORE_URL"] or "")
    assert url.scheme == "redis"
    assert url.hostname == "redis" and url.port in (None, 6379)
    assert str(service(url.hostname)["image"]).startswith("redis:")


def _default(value: str | None) -> tuple[str, str]:
    match = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", value or "")
    assert match, f"{value!r} is not ${{NAME:-default}}"
    return match[1], match[2]


def test_addon_environment_wiring() -> None:
    env = environment(service("addon"))
    assert _default(env["ADDON_BASE_URL"]) == ("ADDON_BASE_URL", "http://localhost:8000")
    name, hosts = _default(env["ADDON_HIPCHAT_HOSTS"])
    assert name == "ADDON_HIPCHAT_HOSTS" and hosts
    for secret in ("ADDON_SECRET_KEY", "ADDON_ADMIN_TOKEN"):
        # Passed through from the caller's environment, never written into the file.
        assert env[secret] in (None, f"${{{secret}}}", f"${{{secret}:-}}")
    settings = (ROOT / "addon" / "settings.py").read_text(encoding="utf-8")
    unknown = [n for n in env if f'"{n}"' not in settings]
    assert not unknown, f"addon/settings.py reads no {unknown}"


def test_addon_publishes_port_8000_to_the_server_port() -> None:
    published = [str(p) for p in service("addon")["ports"]]
    assert "8000:8000" in published
    container = published[published.index("8000:8000")].rsplit(":", 1)[1]
    assert container == option(dockerfile_cmd(), "--port")


def test_addon_starts_after_redis_is_healthy_and_restarts() -> None:
    addon = service("addon")
    assert addon["depends_on"]["redis"]["condition"] == "service_healthy"
    assert addon["restart"] == "unless-stopped"
    assert words(addon["healthcheck"]["test"])[0] == "CMD"


# --- scripts and CI ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_executable_strict_bash(name: str) -> None:
    path = ROOT / name
    assert os.access(path, os.X_OK), f"chmod +x {name}"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    bash = shutil.which("bash")
    assert bash
    subprocess.run([bash, "-n", str(path)], check=True)


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


def _copy_script(name: str, repo: Path) -> Path:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / name, target)
    return target


@dataclass
class CiSandbox:
    """A copy of .ci/run in a fake repo whose scripts/test, apt-get and sudo only log."""

    run: Path
    bin: Path
    log: Path

    def __call__(self) -> subprocess.CompletedProcess[str]:
        env = {"PATH": str(self.bin), "LOG": str(self.log), "HOME": str(self.log.parent)}
        return subprocess.run(
            [str(self.run)], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def calls(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines() if self.log.exists() else []


@pytest.fixture
def ci(tmp_path: Path) -> CiSandbox:
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    bin_.mkdir()
    # A PATH with nothing but what .ci/run needs, so the machine's own redis-server is not on it.
    for tool in ("bash", "env", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_ / tool).symlink_to(found)
    _stub(bin_ / "apt-get", 'echo "apt-get $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}" >> "$LOG"')
    _stub(bin_ / "sudo", '[[ $1 == -n ]] && shift\nexec "$@"')
    _stub(
        repo / "scripts" / "test", 'echo "scripts/test [$*] CI=$CI" >> "$LOG"\nexit "${STATUS:-0}"'
    )
    return CiSandbox(_copy_script(".ci/run", repo), bin_, tmp_path / "calls.log")


def test_ci_installs_redis_server_when_missing_then_runs_the_tests(ci: CiSandbox) -> None:
    result = ci()
    assert result.returncode == 0, result.stderr
    assert ci.calls() == [
        "apt-get update DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y --no-install-recommends redis-server DEBIAN_FRONTEND=noninteractive",
        "apt-get update DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y --no-install-recommends chromium DEBIAN_FRONTEND=noninteractive",
        "scripts/test [] CI=true",
    ]


def test_ci_runs_the_tests_when_chromium_cannot_be_installed(ci: CiSandbox) -> None:
    _stub(ci.bin / "redis-server", "exit 0")
    _stub(ci.bin / "apt-get", 'echo "apt-get $*" >> "$LOG"; exit 100')
    result = ci()
    assert result.returncode == 0, result.stderr
    assert "browser test will be skipped" in result.stderr
    assert ci.calls()[-1] == "scripts/test [] CI=true"


def test_ci_uses_the_redis_server_on_path(ci: CiSandbox) -> None:
    _stub(ci.bin / "redis-server", "exit 0")
    _stub(ci.bin / "chromium", "exit 0")
    result = ci()
    assert result.returncode == 0, result.stderr
    assert ci.calls() == ["scripts/test [] CI=true"]


def test_ci_fails_when_the_tests_fail_or_none_ran(ci: CiSandbox) -> None:
    _stub(ci.bin / "redis-server", "exit 0")
    _stub(ci.bin / "chromium", "exit 0")
    _stub(ci.run.parent.parent / "scripts" / "test", "exit 5")  # pytest: no tests collected
    assert ci().returncode == 5


@pytest.fixture
def venv_stub(tmp_path: Path) -> Path:
    """A fake virtualenv whose tools log their arguments; ``FAIL=<tool>`` makes one fail."""
    venv = tmp_path / "venv"
    for tool in ("python", "ruff", "mypy", "lint-imports", "coverage"):
        _stub(
            venv / "bin" / tool,
            f'echo "{tool}${{*:+ $*}}" >> "$LOG"\n'
            f'if [[ " ${{FAIL:-}} " == *" {tool} "* ]]; then exit 5; fi',
        )
    return venv


def _run_script(name: str, tmp_path: Path, venv: Path, *args: str, fail: str = "") -> int:
    repo = tmp_path / "repo"
    script = _copy_script(name, repo)
    for other in ("scripts/install", "scripts/check"):
        if other != name:
            _stub(repo / other, f'echo "{other}" >> "$LOG"')
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "LOG": str(tmp_path / "calls.log"), "FAIL": fail}
    outside = tmp_path / "elsewhere"  # the scripts must work from any directory
    outside.mkdir(exist_ok=True)
    result = subprocess.run([str(script), *args], cwd=outside, env=env, timeout=60, check=False)
    return result.returncode


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def test_install_installs_editable_with_test_extras_into_the_active_venv(
    tmp_path: Path, venv_stub: Path
) -> None:
    assert _run_script("scripts/install", tmp_path, venv_stub) == 0
    [call] = _calls(tmp_path)
    assert call.startswith("python -m pip install ") and call.endswith(" -e .[test]")
    assert not (tmp_path / "repo" / ".venv").exists()


def test_install_pins_the_dev_group_tools(tmp_path: Path, venv_stub: Path) -> None:
    (tmp_path / "repo").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "repo" / "pyproject.toml")
    assert _run_script("scripts/install", tmp_path, venv_stub) == 0
    [call] = _calls(tmp_path)
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert dev and all(f" {pin} " in call for pin in dev)
    assert call.endswith(" -e .[test]")


def test_install_creates_a_venv_outside_one(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    script = _copy_script("scripts/install", repo)
    # A stand-in interpreter: `-m venv DIR` makes DIR/bin/python (a copy of itself); it logs.
    _stub(
        tmp_path / "python-stub",
        'echo "$0 $*" >> "$LOG"\n'
        'if [[ "$1 $2" == "-m venv" ]]; then mkdir -p "${!#}/bin"; cp "$0" "${!#}/bin/python"; fi',
    )
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {"PYTHON": str(tmp_path / "python-stub"), "LOG": str(tmp_path / "calls.log")}
    subprocess.run([str(script)], cwd=tmp_path, env=env, timeout=60, check=True)
    calls = _calls(tmp_path)
    assert f"{tmp_path}/python-stub -m venv --clear {repo}/.venv" in calls
    assert calls[-1].startswith(f"{repo}/.venv/bin/python -m pip install ")


def test_check_runs_format_lint_and_types(tmp_path: Path, venv_stub: Path) -> None:
    assert _run_script("scripts/check", tmp_path, venv_stub) == 0
    assert _calls(tmp_path) == ["ruff format --check .", "ruff check .", "mypy", "lint-imports"]


def test_check_stops_at_the_first_failure(tmp_path: Path, venv_stub: Path) -> None:
    assert _run_script("scripts/check", tmp_path, venv_stub, fail="ruff") != 0
    assert _calls(tmp_path) == ["ruff format --check ."]


def test_test_installs_checks_then_runs_pytest_under_coverage(
    tmp_path: Path, venv_stub: Path
) -> None:
    assert _run_script("scripts/test", tmp_path, venv_stub, "-k", "jwt and not e2e") == 0
    assert _calls(tmp_path) == [
        "scripts/install",
        "scripts/check",
        "coverage run -m pytest -k jwt and not e2e",
        "coverage report",
    ]


def test_test_keeps_pytest_exit_status(tmp_path: Path, venv_stub: Path) -> None:
    assert _run_script("scripts/test", tmp_path, venv_stub, fail="coverage") == 5
    assert _calls(tmp_path)[-1] == "coverage run -m pytest"


def test_readme_test_command_is_what_ci_runs() -> None:
    assert "scripts/test" in readme_commands(), "README.md must give `scripts/test` in a code block"
    assert "\nexec scripts/test\n" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_bench_command_installs_what_it_needs() -> None:
    script = ROOT / "bench" / "run"
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert text.index("apt-get update") < text.index("apt-get install")
    assert "wrk" in text and "redis-server" in text
    assert "-r bench/requirements.txt" in text and "scripts/install" in text
    assert "bench/run.py" in text
    assert "bench/run" in (ROOT / "README.md").read_text()
