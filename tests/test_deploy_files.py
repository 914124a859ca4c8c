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

from addon.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("scripts/install", "scripts/check", "scripts/test", ".ci/run")
HEALTHZ = "http://127.0.0.1:8000/healthz"
READYZ = "http://127.0.0.1:8000/readyz"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.sentinel.yml")


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


def compose(path: str = "docker-compose.yml") -> dict[str, Any]:
    data = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
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


def test_image_python_satisfies_requires_python() -> None:
    instructions = read_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    bases = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    floor = re.fullmatch(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])
    assert floor, "requires-python is expected as >=3.N"
    for base in bases:
        version = re.fullmatch(r"python:3\.(\d+)\b.*", base)
        assert version, f"{base} is not an official python image with a 3.N tag"
        assert int(version[1]) >= int(floor[1]), f"{base} is older than requires-python"


def test_image_runs_as_the_non_root_user_it_creates() -> None:
    stage = final_stage()
    user = only(stage, "USER").args.partition(":")[0]
    assert user not in ("", "root", "0")
    created = [i.args for i in stage if i.keyword == "RUN" and "useradd" in i.args]
    assert created, "no RUN creates the user"
    assert re.search(rf"useradd\b[^;&|]*\b{re.escape(user)}\b", created[0])


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
    """Answers ``status`` on /healthz and /readyz (the probes the health checks use)."""

    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        code = self.status if self.path in ("/healthz", "/readyz") else 404
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


def healthcheck_commands() -> list[tuple[list[str], str]]:
    """(command, URL it must probe): the image's liveness check, compose's readiness check."""
    _, dockerfile = dockerfile_healthcheck()
    test = words(service("addon")["healthcheck"]["test"])
    assert test[0] == "CMD", "the addon healthcheck must be exec form (CMD ...)"
    return [(dockerfile, HEALTHZ), (test[1:], READYZ)]


@pytest.mark.parametrize("which", [0, 1], ids=["Dockerfile", "compose"])
def test_healthcheck_passes_only_while_the_probe_answers_200(
    which: int, healthz_server: tuple[int, type[_Healthz]]
) -> None:
    argv, url = healthcheck_commands()[which]
    assert argv[:2] == ["python", "-c"] and url in argv[2]
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


# --- docker-compose.yml and docker-compose.sentinel.yml -----------------------------------------


def test_compose_runs_redis_the_addon_and_a_proxy() -> None:
    assert {"addon", "redis", "proxy"} <= set(compose()["services"])
    assert service("addon")["build"] in (".", {"context": "."})


def test_redis_keeps_an_append_only_file_on_a_named_volume() -> None:
    redis = service("redis")
    assert str(redis["image"]).partition(":")[0].endswith("redis")
    command = words(redis["command"])
    assert command[0] == "redis-server"
    assert option(command, "--appendonly") == "yes"
    mounts = [str(v).split(":") for v in redis["volumes"]]
    volume = next(m[0] for m in mounts if m[1:2] == ["/data"])
    assert volume in compose()["volumes"], "the append-only file must outlive the container"


def test_redis_healthcheck_pings() -> None:
    test = words(service("redis")["healthcheck"]["test"])
    assert test[0] in ("CMD", "CMD-SHELL") and "redis-cli" in test[1] and "ping" in test[-1]


def test_addon_store_url_points_at_the_redis_service() -> None:
    url = urlsplit(environment(service("addon"))["ADDON_STORE_URL"] or "")
    assert url.scheme == "redis"
    assert url.hostname == "redis" and url.port in (None, 6379)
    assert "redis" in str(service(url.hostname)["image"])


def _default(value: str | None) -> tuple[str, str]:
    match = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", value or "")
    assert match, f"{value!r} is not ${{NAME:-default}}"
    return match[1], match[2]


class _Reads(dict[str, str]):
    """An environment that remembers every name Settings asks it for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def test_addon_environment_wiring() -> None:
    env = environment(service("addon"))
    name, url = _default(env["ADDON_BASE_URL"])
    assert name == "ADDON_BASE_URL"
    assert urlsplit(url).port == published_port(), "the default URL is the proxy's host port"
    name, hosts = _default(env["ADDON_HIPCHAT_HOSTS"])
    assert name == "ADDON_HIPCHAT_HOSTS" and hosts
    for secret in ("ADDON_SECRET_KEY", "ADDON_ADMIN_TOKEN"):
        # Passed through from the caller's environment, never written into the file.
        assert env[secret] in (None, f"${{{secret}}}", f"${{{secret}:-}}")
    reads = _Reads()
    Settings.from_environ(reads)
    unknown = sorted(set(env) - reads.asked)
    assert not unknown, f"Settings.from_environ reads no {unknown}"


def published_port() -> int:
    """The host port the proxy publishes (the one port of the deployment)."""
    [mapping] = [str(p) for p in service("proxy")["ports"]]
    host, _, _ = mapping.rpartition(":")
    assert host, f"the proxy must publish a host port: {mapping}"
    return int(host.rpartition(":")[2])


def _host_ports(svc: dict[str, Any]) -> list[str]:
    """The ``ports`` entries of ``svc`` that fix a host port (short or long syntax)."""
    fixed = []
    for entry in svc.get("ports", []):
        if isinstance(entry, dict):
            if entry.get("published"):
                fixed.append(str(entry))
        elif ":" in str(entry):
            fixed.append(str(entry))
    return fixed


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_addon_replicas_publish_no_host_port(path: str) -> None:
    # `docker compose up --scale addon=3` fails on the second replica if a host port is fixed.
    addon = compose(path)["services"].get("addon", {})
    assert not _host_ports(addon), f"{path}: the addon service fixes a host port"


def test_the_proxy_publishes_the_port_and_forwards_to_the_addon_port() -> None:
    proxy = service("proxy")
    container = int(str(proxy["ports"][0]).rpartition(":")[2])
    env = environment(proxy)
    assert env["ADDON_PROXY_PORT"] == str(container), "nginx must listen on the published port"
    servers = env["ADDON_UPSTREAM_SERVERS"] or ""
    addon_port = option(dockerfile_cmd(), "--port")
    assert re.search(rf"\bserver addon:{addon_port}\b", servers), servers
    exposed = [str(p) for p in service("addon").get("expose", [])]
    assert addon_port in exposed


def test_the_proxy_runs_the_nginx_template_the_balancer_test_runs() -> None:
    proxy = service("proxy")
    assert str(proxy["image"]).partition(":")[0].endswith("nginx")
    mounts = [str(v).split(":") for v in proxy["volumes"]]
    [source] = [m[0] for m in mounts if m[1].startswith("/etc/nginx/templates/")]
    template = (ROOT / source).read_text(encoding="utf-8")
    placeholders = set(re.findall(r"\$\{(\w+)\}", template))
    assert placeholders <= set(environment(proxy)), "the image's envsubst would leave a hole"
    assert source.removeprefix("./") == "deploy/nginx/addon.conf.template"


def test_the_proxy_has_a_health_check_and_waits_for_a_ready_addon() -> None:
    proxy = service("proxy")
    test = words(proxy["healthcheck"]["test"])
    assert test[0] in ("CMD", "CMD-SHELL") and any("/readyz" in word for word in test)
    assert proxy["depends_on"]["addon"]["condition"] == "service_healthy"


def test_services_start_after_their_dependencies_are_healthy_and_restart() -> None:
    for name in ("addon", "proxy"):
        svc = service(name)
        assert all(d["condition"] == "service_healthy" for d in svc["depends_on"].values())
        assert svc["restart"] in ("always", "unless-stopped", "on-failure")
    assert words(service("addon")["healthcheck"]["test"])[0] == "CMD"


def test_sentinel_compose_points_the_addon_at_three_healthy_sentinels() -> None:
    sentinel = compose("docker-compose.sentinel.yml")
    services = sentinel["services"]
    url = urlsplit(environment(services["addon"])["ADDON_STORE_URL"] or "")
    assert url.scheme == "redis+sentinel"
    hosts = [h.partition(":") for h in url.netloc.split(",")]
    assert len(hosts) == 3
    master = url.path.strip("/").split("/")[0]
    for host, _, port in hosts:
        assert host in services and port == "26379", host
        assert services["addon"]["depends_on"][host]["condition"] == "service_healthy"
        script = "\n".join(words(services[host]["command"]))
        assert f"sentinel monitor {master} redis 6379 2" in script, "quorum 2 of 3 on `redis`"
        assert "26379" in words(services[host]["healthcheck"]["test"])
    replica = words(services["redis-replica"]["command"])
    assert option(replica, "--replicaof") == "redis"


def compose_command() -> list[str]:
    """``docker compose`` (the plugin), else the older ``docker-compose``; skip without both."""
    docker = shutil.which("docker")
    if docker is not None:
        version = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if version.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    pytest.skip("neither the docker compose plugin nor docker-compose is installed")


@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES], ids=["base", "sentinel"])
def test_docker_compose_config_accepts_the_files(files: tuple[str, ...]) -> None:
    # `config` parses, merges and validates the files; it needs no Docker engine.
    argv = [*compose_command(), "--project-directory", str(ROOT)]
    for name in files:
        argv += ["-f", str(ROOT / name)]
    result = subprocess.run(
        [*argv, "config", "--quiet"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def readme_override() -> dict[str, Any]:
    """The ``docker-compose.override.yml`` example of README.md's Docker section, parsed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(# docker-compose\.override\.yml.*?)^```", text, re.M | re.S)
    assert len(blocks) == 1, "README.md must show one docker-compose.override.yml example"
    loaded: dict[str, Any] = yaml.safe_load(blocks[0])
    return loaded


def test_the_readme_override_mounts_the_folders_the_image_reads(tmp_path: Path) -> None:
    env = dict(
        word.partition("=")[::2]
        for i in final_stage()
        if i.keyword == "ENV"
        for word in shlex.split(i.args)
    )
    mounts = readme_override()["services"]["addon"]["volumes"]
    assert {m.split(":")[1] for m in mounts} == {
        env["ADDON_INTEGRATIONS_PATH"],
        env["ADDON_CAPABILITIES_PATH"],
    }
    assert {m.split(":")[0] for m in mounts} == {"./integrations", "./capabilities"}
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(yaml.safe_dump(readme_override()), encoding="utf-8")
    argv = [
        *compose_command(),
        "--project-directory",
        str(ROOT),
        "-f",
        str(ROOT / COMPOSE_FILES[0]),
    ]
    result = subprocess.run(
        [*argv, "-f", str(override), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


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


_TOOLS = ("redis-server", "nginx", "chromium", "docker-compose")
_PACKAGES = {
    "redis-server": "redis-server",
    "nginx": "nginx-light",
    "chromium": "chromium",
    "docker-compose": "docker-compose",
}


@pytest.mark.parametrize(
    "missing",
    [_TOOLS, ("redis-server",), ("nginx",), ("chromium",), ("docker-compose",)],
    ids=["all-missing", "redis-missing", "nginx-missing", "chromium-missing", "compose-missing"],
)
def test_ci_installs_what_is_missing_with_one_apt_update(
    ci: CiSandbox, missing: tuple[str, ...]
) -> None:
    for tool in _TOOLS:
        if tool not in missing:
            _stub(ci.bin / tool, "exit 0")
    result = ci()
    assert result.returncode == 0, result.stderr
    installs = [
        f"apt-get install -y --no-install-recommends {_PACKAGES[tool]} "
        "DEBIAN_FRONTEND=noninteractive"
        for tool in _TOOLS
        if tool in missing
    ]
    assert ci.calls() == [
        "apt-get update DEBIAN_FRONTEND=noninteractive",
        *installs,
        "scripts/test [] CI=true",
    ]


def test_ci_runs_the_tests_when_chromium_cannot_be_installed(ci: CiSandbox) -> None:
    _stub(ci.bin / "redis-server", "exit 0")
    _stub(ci.bin / "nginx", "exit 0")
    _stub(ci.bin / "docker-compose", "exit 0")
    _stub(ci.bin / "apt-get", 'echo "apt-get $*" >> "$LOG"; exit 100')
    result = ci()
    assert result.returncode == 0, result.stderr
    assert "browser tests will be skipped" in result.stderr
    assert "compose-config test will be skipped" not in result.stderr
    assert ci.calls()[-1] == "scripts/test [] CI=true"


def test_ci_runs_the_tests_when_docker_compose_cannot_be_installed(ci: CiSandbox) -> None:
    for tool in ("redis-server", "nginx", "chromium"):
        _stub(ci.bin / tool, "exit 0")
    _stub(ci.bin / "apt-get", 'echo "apt-get $*" >> "$LOG"; exit 100')
    result = ci()
    assert result.returncode == 0, result.stderr
    assert "compose-config test will be skipped" in result.stderr
    assert "browser tests will be skipped" not in result.stderr
    assert ci.calls()[-1] == "scripts/test [] CI=true"


@pytest.mark.parametrize(
    ("plugin", "installs"), [(True, False), (False, True)], ids=["plugin", "no-plugin"]
)
def test_ci_takes_the_docker_compose_plugin_for_docker_compose(
    ci: CiSandbox, plugin: bool, installs: bool
) -> None:
    for tool in ("redis-server", "nginx", "chromium"):
        _stub(ci.bin / tool, "exit 0")
    # `docker compose version` succeeds only when the plugin is there.
    _stub(ci.bin / "docker", f'[[ "$*" == "compose version" ]] && exit {0 if plugin else 1}')
    result = ci()
    assert result.returncode == 0, result.stderr
    install = (
        "apt-get install -y --no-install-recommends docker-compose DEBIAN_FRONTEND=noninteractive"
    )
    assert (install in ci.calls()) is installs
    assert ci.calls()[-1] == "scripts/test [] CI=true"


def test_ci_fails_when_redis_server_cannot_be_installed(ci: CiSandbox) -> None:
    _stub(ci.bin / "nginx", "exit 0")
    _stub(ci.bin / "chromium", "exit 0")
    _stub(ci.bin / "apt-get", 'echo "apt-get $*" >> "$LOG"; exit 100')
    result = ci()
    assert result.returncode != 0
    assert "scripts/test [] CI=true" not in ci.calls()


def test_ci_uses_the_tools_on_path(ci: CiSandbox) -> None:
    for tool in _TOOLS:
        _stub(ci.bin / tool, "exit 0")
    result = ci()
    assert result.returncode == 0, result.stderr
    assert ci.calls() == ["scripts/test [] CI=true"]


def test_ci_fails_when_the_tests_fail_or_none_ran(ci: CiSandbox) -> None:
    for tool in _TOOLS:
        _stub(ci.bin / tool, "exit 0")
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
