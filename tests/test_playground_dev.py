"""``hipchat-addon dev``: the add-on pointed at the fake HipChat, the playground beside it, and an
add-on reload that leaves the rooms as they were."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from addon.settings import Settings
from addon.testing.devserver import dev_environment, run_dev
from tests.helpers import REPO


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_addon_is_pointed_at_the_fake() -> None:
    env = dev_environment({"ADDON_HIPCHAT_HOSTS": "hipchat.example.com"}, 9000, 9001)
    assert env["ADDON_BASE_URL"] == "http://127.0.0.1:9000"
    assert env["ADDON_HIPCHAT_HOSTS"] == "hipchat.example.com,127.0.0.1:9001"
    assert env["ADDON_STORE_URL"] == "sqlite:///.hipchat-addon-dev/store.sqlite3"
    kept = dev_environment({"ADDON_STORE_URL": "redis://r:6379/0"}, 9000, 9001)
    assert kept["ADDON_STORE_URL"] == "redis://r:6379/0"
    assert kept["ADDON_HIPCHAT_HOSTS"] == "127.0.0.1:9001"


def test_dev_serves_the_playground_beside_the_addon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    port, hipchat_port = _port(), _port()
    args = argparse.Namespace(port=port, hipchat_port=hipchat_port, no_reload=True)
    env = {
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
    }
    environ: dict[str, str] = {}
    seen: list[tuple[Settings, int, bool, int, int]] = []

    def serve(settings: Settings, serve_port: int, reload: bool) -> None:
        page = httpx.get(f"http://127.0.0.1:{hipchat_port}/playground")
        fake = httpx.get(f"http://127.0.0.1:{hipchat_port}/v2/capabilities")
        seen.append((settings, serve_port, reload, page.status_code, fake.status_code))

    assert run_dev(args, env, serve=serve, environ=environ) == 0
    ((settings, serve_port, reload, page, fake),) = seen
    assert (serve_port, reload, page, fake) == (port, False, 200, 200)
    assert settings.hipchat_hosts == (f"127.0.0.1:{hipchat_port}",)
    assert environ["ADDON_BASE_URL"] == f"http://127.0.0.1:{port}"
    assert (tmp_path / ".hipchat-addon-dev").is_dir()
    assert f"http://127.0.0.1:{hipchat_port}/playground" in capsys.readouterr().out


def _eventually(check: str, attempt: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not attempt():
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        time.sleep(0.25)


@pytest.mark.e2e
def test_an_addon_reload_keeps_the_installation_and_the_room(tmp_path: Path) -> None:
    integrations = tmp_path / "integrations"
    integrations.mkdir()
    shutil.copy(REPO / "integrations" / "echo.py", integrations / "echo.py")
    port, hipchat_port = _port(), _port()
    env = {**os.environ, "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities")}
    env.pop("ADDON_STORE_URL", None)
    command = [sys.executable, "-m", "addon", "dev", "-i", str(integrations), "--port", str(port)]
    dev = subprocess.Popen([*command, "--hipchat-port", str(hipchat_port)], cwd=tmp_path, env=env)
    playground = httpx.Client(base_url=f"http://127.0.0.1:{hipchat_port}", timeout=30)

    def says(text: str, expected: str) -> bool:
        assert dev.poll() is None, "hipchat-addon dev exited"
        try:
            playground.post("/playground/send", data={"text": text})
            messages = playground.get("/playground/fragments").json()["messages"]
        except httpx.TransportError:
            return False
        return f'<div class="text">{expected}</div>' in messages

    try:
        _eventually("the add-on", lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        _eventually("the playground", lambda: _answers(f"{playground.base_url}/playground"))
        assert playground.post("/playground/install", data={"scope": "room"}).json()["ok"]
        assert says("/echo before", "before")
        echo = integrations / "echo.py"
        echo.write_text(echo.read_text().replace("message.args or", "message.args.upper() or"))
        _eventually("the reloaded add-on", lambda: says("/echo after", "AFTER"))
        assert playground.get("/playground/fragments").json()["installs"].count("Uninstall") == 1
    finally:
        playground.close()
        dev.terminate()
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False
