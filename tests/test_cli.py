"""The command line, including a real server on a socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from addon.cli import main
from tests.helpers import REPO


def test_descriptor_prints_the_validated_descriptor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADDON_BASE_URL", "https://addon.example.com")
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    assert main(["descriptor"]) == 0
    descriptor = json.loads(capsys.readouterr().out)
    assert descriptor["links"]["self"] == "https://addon.example.com/atlassian-connect.json"


def test_check_config_reports_ok(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    assert main(["check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out


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
