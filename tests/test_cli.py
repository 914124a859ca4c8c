"""The command line, including a real server on a socket."""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from addon.cli import (
    _metrics_dir,
    display_store_url,
    main,
    startup_summary,
    startup_warnings,
    validate,
)
from addon.settings import Secret
from addon.testing import FakeHipChat
from tests.engines import RedisProcesses
from tests.helpers import REPO, settings_for


def test_descriptor_prints_the_validated_descriptor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADDON_BASE_URL", "https://addon.example.com")
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    assert main(["descriptor"]) == 0
    descriptor = json.loads(capsys.readouterr().out)
    assert descriptor["links"]["self"] == "https://addon.example.com/atlassian-connect.json"


def test_check_config_still_works_and_says_it_is_deprecated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    monkeypatch.setenv("ADDON_INTEGRATIONS_PATH", str(REPO / "integrations"))
    monkeypatch.setenv("ADDON_STORE_URL", f"sqlite:///{tmp_path / 'check.db'}")
    assert main(["check"]) == 0
    check = capsys.readouterr()
    assert "configuration OK" in check.out and check.err == ""
    assert main(["check-config"]) == 0
    alias = capsys.readouterr()
    assert alias.out == check.out
    assert alias.err.count("\n") == 1 and "deprecated" in alias.err and "'check'" in alias.err


def test_a_missing_integrations_folder_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    assert main(["descriptor", "-i", str(tmp_path / "nowhere")]) == 2
    assert "ADDON_INTEGRATIONS_PATH" in capsys.readouterr().err


def test_a_bad_setting_exits_2_with_one_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADDON_STORE_URL", "postgres://nope")
    assert main(["serve", "-p", "8000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hipchat-addon: ADDON_STORE_URL") and err.count("\n") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited early"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def serve(cwd: Path, port: int, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "addon", *args]
    full_env = {**os.environ, "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"), **env}
    full_env.pop("ADDON_STORE_URL", None) if "ADDON_STORE_URL" not in env else None
    return subprocess.Popen(command, cwd=cwd, env=full_env)


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.e2e
def test_the_older_servers_flags_serve_with_the_sqlite_default(
    tmp_path: Path, stopped: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    (tmp_path / "integrations").mkdir()
    process = serve(tmp_path, port, {}, "serve", "-p", str(port), "-i", "./integrations")
    stopped.append(process)
    wait_until_up(f"http://127.0.0.1:{port}/healthz", process)

    descriptor = httpx.get(f"http://127.0.0.1:{port}/atlassian-connect.json").json()
    assert descriptor["key"] == "io.hipchat-addon"
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    assert (tmp_path / "addon.db").exists()


@pytest.mark.e2e
def test_serve_uses_redis_when_configured(
    tmp_path: Path, redis_url: str, stopped: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = {"ADDON_STORE_URL": redis_url, "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations")}
    process = serve(tmp_path, port, env, "serve", "--port", str(port))
    stopped.append(process)
    wait_until_up(f"http://127.0.0.1:{port}/readyz", process)
    assert not (tmp_path / "addon.db").exists()


@pytest.mark.e2e
def test_the_commands_secret_stays_out_of_the_access_log(
    tmp_path: Path, stopped: list[subprocess.Popen[bytes]]
) -> None:
    secret = "commands-secret-" + "q" * 20
    port = free_port()
    log = tmp_path / "addon.log"
    env = {"ADDON_COMMANDS_SECRET": secret, "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations")}
    process = serve(tmp_path, port, env, "serve", "--port", str(port), "-l", str(log))
    stopped.append(process)
    wait_until_up(f"http://127.0.0.1:{port}/healthz", process)

    body = {"event": "room_message", "oauth_client_id": "nobody"}
    response = httpx.post(f"http://127.0.0.1:{port}/commands/{secret}", json=body)
    assert response.status_code == 401  # the secret was right; the installation is unknown
    process.terminate()
    process.wait(timeout=10)

    text = log.read_text()
    assert "/commands/[redacted]" in text  # the access line is there, masked
    assert "deprecated" in text
    assert secret not in text


# --- a CLI that behaves --------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ADDON_* variable set, and an empty working directory."""
    for name in list(os.environ):
        if name.startswith("ADDON_") and name != "ADDON_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``hipchat-addon ARGS`` as a real process (for commands that would serve on success)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ADDON_")}
    return subprocess.run(
        [sys.executable, "-m", "addon", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["new"], ["check"], ["descriptor"], ["storage"]], ids=str
)
def test_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hipchat-addon")
    assert "``" not in out and "check-config" not in out


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert capsys.readouterr().out == f"hipchat-addon {pyproject['project']['version']}\n"
    assert version("hipchat-addon") == pyproject["project"]["version"]


@pytest.mark.parametrize(
    ("typo", "command"), [("serv", "serve"), ("chek", "check"), ("descripter", "descriptor")]
)
def test_a_typo_suggests_the_nearest_command(
    typo: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([typo]) == 2
    err = capsys.readouterr().err
    assert err == f"hipchat-addon: unknown command {typo!r}; did you mean {command!r}?\n"


def test_an_unknown_word_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "the commands are serve, dev, new, check, descriptor, storage" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: like `| head -1` that finished
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDON_")}
    env["ADDON_CAPABILITIES_PATH"] = str(REPO / "capabilities")
    env["ADDON_INTEGRATIONS_PATH"] = str(REPO / "integrations")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "addon", "descriptor"],
            stdout=write,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert result.stderr == b""
    assert result.returncode == 0


def write_integration(folder: Path, name: str, command: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(
        "from addon import Integration, RoomMessage\n"
        f"integration = Integration(key={name!r}, name={name!r})\n"
        f"@integration.command({command!r})\n"
        "async def run(message: RoomMessage) -> None:\n"
        "    await message.reply('hi')\n"
    )


def broken_help(work: Path) -> str:
    write_integration(work / "integrations", "mine", "help")
    return "/help is owned by both 'mine' and 'help'"


def conflict(work: Path) -> str:
    write_integration(work / "integrations", "one", "deploy")
    write_integration(work / "integrations", "two", "deploy")
    return "/deploy is owned by both 'one' and 'two'"


def bad_descriptor(work: Path) -> str:
    (work / "integrations").mkdir()
    caps = json.loads((REPO / "capabilities" / "addon.json").read_text())
    (work / "capabilities" / "addon.json").write_text(json.dumps({**caps, "scopes": ["fly"]}))
    return "scopes must be non-empty"


@pytest.mark.parametrize("breakage", [broken_help, conflict, bad_descriptor])
def test_check_and_serve_refuse_the_same_things(breakage: Any, tmp_path: Path) -> None:
    (tmp_path / "capabilities").mkdir()
    shutil.copy(REPO / "capabilities" / "addon.json", tmp_path / "capabilities")
    expected = breakage(tmp_path)
    check = cli(tmp_path, "check", "--no-store-check")
    serve = cli(tmp_path, "serve", "--no-store-check", "-p", str(free_port()))
    assert check.returncode == serve.returncode == 2
    assert expected in check.stderr and check.stderr.count("\n") == 1
    assert serve.stderr == check.stderr


def test_an_unreachable_store_fails_check_and_serve_in_one_line(tmp_path: Path) -> None:
    env = {
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_STORE_URL": f"redis://:hunter2-password@127.0.0.1:{free_port()}/0",
    }
    for args in (["check"], ["serve", "-p", str(free_port())]):
        result = cli(tmp_path, *args, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("hipchat-addon: ADDON_STORE_URL redis://:***@127.0.0.1:")
        assert result.stderr.count("\n") == 1 and "--no-store-check" in result.stderr
        assert "hunter2" not in result.stderr
    skipped = cli(tmp_path, "check", "--no-store-check", env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert "not probed (--no-store-check)" in skipped.stdout


def test_check_probes_the_store_with_addon_store_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    processes = RedisProcesses(tmp_path)
    try:
        port = processes.start(config="requirepass hunter2-secret\n")
        monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
        monkeypatch.setenv("ADDON_INTEGRATIONS_PATH", str(REPO / "integrations"))
        monkeypatch.setenv("ADDON_STORE_URL", f"redis://127.0.0.1:{port}/0")
        monkeypatch.setenv("ADDON_STORE_PASSWORD", "hunter2-secret")
        assert main(["check"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "configuration OK" in out and "hunter2" not in out
    finally:
        processes.close()


@pytest.mark.parametrize("command", ["serve", "check"])
def test_no_capabilities_here_points_to_new(
    command: str, clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "-p", "1"] if command == "serve" else [command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "capabilities/addon.json" in err and "'hipchat-addon new NAME'" in err


def test_several_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    env = {
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
    }
    result = cli(tmp_path, "serve", "--workers", "2", "-p", str(free_port()), env=env)
    assert result.returncode == 2
    assert "SQLite is for one process" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_serve_needs_at_least_one_worker(workers: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hipchat-addon serve") and "at least one worker" in err


def test_serve_takes_the_metrics_dir_from_settings_not_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # settings.py is the only reader of the environment: a dir in settings is used as it is.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with _metrics_dir(2, tmp_path):
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    # Unset under several workers: a fresh dir, exported for the workers, removed afterwards.
    with _metrics_dir(2, None):
        made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert made.is_dir() and not any(made.iterdir())
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and not made.exists()


def test_the_startup_summary_names_everything_but_the_password() -> None:
    settings = settings_for("redis://:hunter2-password@cache.example:6379/0")
    checked = validate(settings, store_check=False)
    line = startup_summary(settings, checked, workers=3)
    assert "\n" not in line and "hunter2" not in line
    assert "store redis://:***@cache.example:6379/0" in line
    assert "base URL http://addon.test" in line
    assert "descriptor http://addon.test/atlassian-connect.json" in line
    assert "/echo" in line and "/help" in line and "/ping" in line
    assert "workers 3" in line and "secrets not sealed" in line
    sealed = dataclasses.replace(settings, secret_key=Secret("k" * 32))
    assert "secrets sealed" in startup_summary(sealed, checked, workers=1)


def test_an_unsealed_redis_store_is_warned_about() -> None:
    [warning] = startup_warnings(settings_for("redis://127.0.0.1:6379/0"))
    assert warning.startswith("ADDON_SECRET_KEY is unset")
    assert startup_warnings(settings_for("sqlite:///addon.db")) == []
    sealed = settings_for("redis://127.0.0.1:6379/0", ADDON_SECRET_KEY="k" * 32)
    assert startup_warnings(sealed) == []


@pytest.mark.parametrize(
    ("password", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("redis://user@h/0", "redis://user@h/0"),
        ("sqlite:///addon.db", "sqlite:///addon.db"),
    ],
)
def test_store_urls_are_shown_without_password(password: str, shown: str) -> None:
    assert display_store_url(password) == shown


# --- the older server's positional command line ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["serve", "eighty"], "PORT 'eighty' is not a port number"),
        (["8000", "./integrations", "no-colon"], "neither NAME:TOKEN nor ROOM_ID"),
        (["serve", "8000", "./integrations", "a::b"], "neither NAME:TOKEN nor ROOM_ID"),
        (["serve", "8000", "-p", "9000"], "give the port once"),
        (["70000"], "PORT '70000' is not a port number"),
        (["serve", "8000", "dir", "-i", "other"], "give the integrations folder once"),
    ],
)
def test_invalid_positional_arguments_print_the_older_usage_line(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hipchat-addon serve")
    assert (
        "hipchat-addon serve PORT INTEGRATIONS_PATH [NAME:TOKEN | ROOM_ID:INTEGRATION:TOKEN" in err
    )
    assert error in err


SEED_SCRIPT = """
def run_integration(notification, query, all_tokens, token, storage, log):
    storage["calls"] = storage.get("calls", 0) + 1
    return token + " " + ",".join(sorted(all_tokens))
"""
ADMIN = "admin-token-" + "y" * 20


@pytest.fixture(params=[["serve"], []], ids=["serve", "bare"])
def positional_server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    live_hipchat: FakeHipChat,
    stopped: list[subprocess.Popen[bytes]],
) -> str:
    (tmp_path / "integrations").mkdir()
    (tmp_path / "integrations" / "test.py").write_text(SEED_SCRIPT)
    port = free_port()
    env = {
        "ADDON_BASE_URL": f"http://127.0.0.1:{port}",
        "ADDON_HIPCHAT_HOSTS": live_hipchat.base_url.removeprefix("http://"),
        "ADDON_ADMIN_TOKEN": ADMIN,
    }
    args = [*request.param, str(port), "./integrations", "1234:test:TOKEN", "send_message:OTHER"]
    process = serve(tmp_path, port, env, *args)
    stopped.append(process)
    wait_until_up(f"http://127.0.0.1:{port}/healthz", process)
    return f"http://127.0.0.1:{port}"


@pytest.mark.e2e
@pytest.mark.anyio
async def test_the_older_positional_form_hands_room_tokens_to_seed_scripts(
    positional_server: str, live_hipchat: FakeHipChat, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=positional_server, timeout=20) as addon:
        room = await live_hipchat.install(addon, room_id=1234)
        reply = await live_hipchat.send_message(room, "/test")
        assert reply is not None and reply.json()["message"] == "TOKEN 1234:test,send_message"

        admin = {"Authorization": f"Bearer {ADMIN}"}
        for body in ("save backup.json", "load backup.json", "erase"):
            refused = await addon.post("/", content=body)
            assert refused.status_code == 401
        saved = await addon.post("/", content="save backup.json", headers=admin)
        assert saved.json() == {"saved": "backup.json", "entries": 1}
        document = json.loads((tmp_path / "storage-files" / "backup.json").read_text())
        assert document == {"storage": {f"{room.oauth_id}/test": {"calls": 1}}}  # per installation
        assert (await addon.post("/", content="erase", headers=admin)).json() == {"erased": 1}
        loaded = await addon.post("/", content="load backup.json", headers=admin)
        assert loaded.json() == {"loaded": "backup.json", "imported": 1}
        escape = await addon.post("/", content="save ../backup.json", headers=admin)
        assert escape.status_code == 400
        assert (await addon.get("/admin/storage", headers=admin)).json() == document


# --- logging ------------------------------------------------------------------------------------


def eventually_lines(path: Path, enough: Callable[[list[str]], bool]) -> list[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if enough(lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{path} never had the expected lines: {lines}")


@pytest.mark.e2e
def test_every_worker_logs_to_the_logfile_in_json(
    tmp_path: Path, redis_url: str, stopped: list[subprocess.Popen[bytes]]
) -> None:
    port, logfile = free_port(), tmp_path / "addon.log"
    env = {"ADDON_STORE_URL": redis_url, "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations")}
    args = ["serve", "--workers", "2", "-p", str(port), "-l", str(logfile)]
    process = serve(tmp_path, port, env, *args)
    stopped.append(process)

    def started_workers(lines: list[str]) -> set[str]:
        messages = [json.loads(line)["message"] for line in lines]
        return {m for m in messages if m.startswith("Started server process")}

    lines = eventually_lines(logfile, lambda lines: len(started_workers(lines)) == 2)
    entries = [json.loads(line) for line in lines]  # every line is JSON, from every process
    assert all(entry["level"] in ("INFO", "WARNING") for entry in entries)
    [summary] = [e for e in entries if "descriptor http://localhost:8000/" in e["message"]]
    assert "workers 2" in summary["message"]
    assert any(e["message"].startswith("ADDON_SECRET_KEY is unset") for e in entries)


def read_until(fd: int, marker: bytes) -> bytes:
    out = b""
    deadline = time.monotonic() + 30
    while marker not in out:
        assert time.monotonic() < deadline, f"no {marker!r} in {out!r}"
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            out += os.read(fd, 4096)
    return out


@pytest.mark.e2e
@pytest.mark.parametrize(("forced", "is_json"), [(None, False), ("json", True)])
def test_logs_on_a_terminal_are_text_unless_json_is_forced(
    tmp_path: Path, stopped: list[subprocess.Popen[bytes]], forced: str | None, is_json: bool
) -> None:
    port = free_port()
    master, slave = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ADDON_")}
    full_env["ADDON_CAPABILITIES_PATH"] = str(REPO / "capabilities")
    full_env["ADDON_INTEGRATIONS_PATH"] = str(REPO / "integrations")
    if forced:
        full_env["ADDON_LOG_FORMAT"] = forced
    process = subprocess.Popen(
        [sys.executable, "-m", "addon", "serve", "-p", str(port)],
        cwd=tmp_path,
        env=full_env,
        stderr=slave,
    )
    stopped.append(process)
    os.close(slave)
    try:
        output = read_until(master, b"secrets not sealed").decode()
    finally:
        os.close(master)
    line = next(line for line in output.splitlines() if "secrets not sealed" in line)
    if is_json:
        assert json.loads(line)["level"] == "INFO"
    else:
        assert not line.startswith("{") and " INFO    addon: hipchat-addon " in line


# --- new ----------------------------------------------------------------------------------------


def test_new_scaffolds_a_project_that_checks_and_passes_its_own_tests(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["new", "my-addon"]) == 0
    assert "cd my-addon" in capsys.readouterr().out
    project = clean_env / "my-addon"
    caps = json.loads((project / "capabilities" / "addon.json").read_text())
    assert (caps["key"], caps["name"]) == ("my-addon", "My Addon")
    assert (project / ".gitignore").is_file() and (project / "Dockerfile").is_file()
    assert "hipchat-addon" in (project / "requirements.txt").read_text()
    dev_requirements = (project / "requirements-dev.txt").read_text().split()
    assert {"-r", "requirements.txt", "pytest>=8", "anyio>=4"} <= set(dev_requirements)
    readme = (project / "README.md").read_text()
    assert "hipchat-addon dev" in readme and "hipchat-addon serve" in readme
    assert "from PyPI" in readme and (project / "wheels" / "README.md").is_file()
    assert "COPY wheels/" in (project / "Dockerfile").read_text()
    test_file = (project / "tests" / "test_hello.py").read_text()
    assert "(hipchat: FakeHipChat, addon_app: Starlette)" in test_file
    compose_file = yaml.safe_load((project / "docker-compose.yml").read_text())
    assert compose_file["services"]["addon"]["build"] == "."
    assert (
        "from addon import Integration, RoomMessage"
        in (project / "integrations" / "hello.py").read_text()
    )

    monkeypatch.chdir(project)
    assert main(["check"]) == 0
    assert "/hello [name]" in capsys.readouterr().out
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout


@pytest.mark.parametrize("name", ["My-Addon", "my_addon", "a.b", "x-", "a--b", "9lives", "a" * 65])
def test_new_refuses_names_that_are_not_keys(
    name: str, clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", name]) == 2
    assert "is not a valid add-on key" in capsys.readouterr().err
    assert list(clean_env.iterdir()) == []


def test_new_refuses_a_folder_that_is_not_empty(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_env / "empty").mkdir()
    assert main(["new", "empty"]) == 0
    (clean_env / "taken").mkdir()
    (clean_env / "taken" / "notes.txt").write_text("mine")
    assert main(["new", "taken"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (clean_env / "taken").iterdir()] == ["notes.txt"]
