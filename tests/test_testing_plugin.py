"""The test kit as integration authors use it: the pytest plugin in a project of their own.

The plugin runs in a ``python -m pytest`` subprocess, in a temporary project holding only
``integrations/``, ``capabilities/`` and a test file, as an author's project would (this suite's own
``conftest.py`` fixtures do not reach it). The pieces it is built from are tested in-process.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from addon import Integration, RoomMessage
from addon.testing import (
    FakeHipChat,
    FakeHipChatError,
    addon_settings,
    create_test_app,
    trusting,
)
from tests.helpers import REPO, settings_for

AUTHOR_TESTS = """
import pytest

from addon import Integration, RoomMessage
from addon.testing import FakeHipChatError

pytestmark = pytest.mark.anyio


async def test_echo(hipchat, addon_app):
    room = await hipchat.install(addon_app)
    await hipchat.send_message(room, "/echo hi")
    assert hipchat.notifications(room) == ["hi"]


async def test_help_lists_the_project_commands(hipchat, addon_app):
    room = await hipchat.install(addon_app, room_id=7)
    await hipchat.send_message(room, "/help")
    help_text = "/echo <text> - Repeat the text\\n/help - List the commands"
    assert hipchat.notifications(7) == [help_text]


broken = Integration("broken")


@broken.command("boom")
async def boom(message: RoomMessage) -> None:
    raise LookupError("the handler broke on purpose")


@pytest.mark.hipchat_addon(integrations=[broken])
async def test_a_broken_handler(hipchat, addon_app):
    room = await hipchat.install(addon_app)
    await hipchat.send_message(room, "/boom")


async def test_a_refused_install(hipchat, addon_app):
    hipchat.capabilities_document["links"]["self"] = "http://hipchat.test/v2/elsewhere"
    with pytest.raises(FakeHipChatError) as refused:
        await hipchat.install(addon_app)
    print("REFUSED:", refused.value)


def test_the_backend_is_asyncio(anyio_backend):
    assert anyio_backend == "asyncio"


@pytest.mark.hipchat_addon(env={"ADDON_INSTALL_FLOW": "client"})
async def test_the_client_side_flow(hipchat, addon_app):
    room = await hipchat.install(addon_app, room_id=3)
    assert room.response.status_code == 302
    await hipchat.send_message(room, "/echo client")
    assert hipchat.notifications(3) == ["client"]


late = Integration("late")


@late.command("late")
async def fails_late(message: RoomMessage) -> None:
    await message.reply("on my way")
    raise LookupError("failed after the reply")


@pytest.mark.hipchat_addon(integrations=[late])
async def test_a_late_failure(hipchat, addon_app):
    room = await hipchat.install(addon_app)
    await hipchat.send_message(room, "/late")
    assert hipchat.notifications(room) == ["on my way"]
"""


def make_project(root: Path, tests: str) -> Path:
    """An integration author's project: the echo integration, the descriptor, ``tests``."""
    (root / "integrations").mkdir(parents=True)
    (root / "capabilities").mkdir()
    (root / "tests").mkdir()
    (root / "integrations" / "echo.py").write_text((REPO / "integrations" / "echo.py").read_text())
    (root / "capabilities" / "addon.json").write_text(
        (REPO / "capabilities" / "addon.json").read_text()
    )
    (root / "tests" / "test_kit.py").write_text(tests)
    return root


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` with this interpreter (the repo's venv), in ``project``."""
    command = [sys.executable, "-m", "pytest", "-W", "error", "-p", "no:cacheprovider", *args]
    return subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=120, check=False
    )


def outcomes(output: str) -> set[tuple[str, str]]:
    """``{("test_echo", "PASSED"), ...}`` from ``pytest -rA`` output (ERROR: at teardown)."""
    found = re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED) tests/test_kit\.py::(\S+)", output, re.M)
    return {(name, outcome) for outcome, name in found}


def test_the_fixtures_work_in_an_authors_project(tmp_path: Path) -> None:
    result = run_pytest(make_project(tmp_path, AUTHOR_TESTS), "-rA")
    output = result.stdout + result.stderr
    assert outcomes(output) == {
        ("test_echo", "PASSED"),
        ("test_help_lists_the_project_commands", "PASSED"),
        ("test_a_broken_handler", "FAILED"),
        ("test_a_refused_install", "PASSED"),
        ("test_the_backend_is_asyncio", "PASSED"),  # one run each: asyncio only, not trio
        ("test_the_client_side_flow", "PASSED"),
        ("test_a_late_failure", "PASSED"),
        ("test_a_late_failure", "ERROR"),  # at teardown, when the add-on is drained
    }, output
    # raise_errors: the broken handler's own exception and line, not a red notice.
    assert "LookupError: the handler broke on purpose" in output
    assert 'raise LookupError("the handler broke on purpose")' in output
    # A refused install says why, in the add-on's words.
    assert "REFUSED: install answered 400: The capabilities document's links.self" in output
    assert "LookupError: failed after the reply" in output


def test_the_integrations_folder_can_be_set_in_the_ini_file(tmp_path: Path) -> None:
    project = make_project(tmp_path, AUTHOR_TESTS.split("\nbroken = ")[0])
    (project / "integrations").rename(project / "commands")
    (project / "pytest.ini").write_text("[pytest]\nhipchat_addon_integrations = commands\n")
    result = run_pytest(project, "-q", "tests/test_kit.py::test_echo")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_plugin_is_registered_under_its_documented_name() -> None:
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert {p.name: p.value for p in plugins}["hipchat_addon"] == "addon.testing.plugin"


@pytest.mark.anyio
async def test_a_handlers_exception_reaches_the_test(tmp_path: Path) -> None:
    hipchat = FakeHipChat()
    broken = Integration("broken")

    @broken.command("boom")
    async def boom(message: RoomMessage) -> None:
        raise LookupError("bug in the handler")

    settings = addon_settings(hipchat, store_url=f"sqlite:///{tmp_path}/a.db")
    app = create_test_app(hipchat, settings, integrations=[broken])
    room = await hipchat.install(app)
    with pytest.raises(LookupError, match="bug in the handler"):
        await hipchat.send_message(room, "/boom")
    await hipchat.aclose()
    await app.state.addon.aclose()


@pytest.mark.anyio
async def test_without_raise_errors_the_room_gets_the_notice(tmp_path: Path) -> None:
    hipchat = FakeHipChat()
    broken = Integration("broken")

    @broken.command("boom")
    async def boom(message: RoomMessage) -> None:
        raise LookupError("bug in the handler")

    settings = addon_settings(hipchat, store_url=f"sqlite:///{tmp_path}/a.db")
    app = create_test_app(hipchat, settings, integrations=[broken], raise_errors=False)
    room = await hipchat.install(app)
    await hipchat.send_message(room, "/boom")
    await hipchat.aclose()
    await app.state.addon.aclose()
    assert hipchat.notifications(room) == ["/boom failed; the error is logged"]


@pytest.mark.anyio
async def test_a_refused_install_raises_with_the_addons_message(tmp_path: Path) -> None:
    hipchat = FakeHipChat()
    app = create_test_app(hipchat, addon_settings(hipchat, store_url=f"sqlite:///{tmp_path}/a.db"))
    hipchat.capabilities_document["links"]["self"] = "http://hipchat.test/v2/elsewhere"
    with pytest.raises(FakeHipChatError) as refused:
        await hipchat.install(app, room_id=1)
    await hipchat.aclose()
    await app.state.addon.aclose()
    assert str(refused.value) == (
        "install answered 400: The capabilities document's links.self does not match "
        "capabilitiesUrl; refused"
    )
    assert hipchat.clients == {}


def test_the_fakes_host_is_trusted_whatever_the_settings_say(tmp_path: Path) -> None:
    hipchat = FakeHipChat(base_url="http://127.0.0.1:8123")
    settings = addon_settings(
        hipchat,
        store_url=f"sqlite:///{tmp_path}/a.db",
        env={"ADDON_HIPCHAT_HOSTS": "api.hipchat.com"},
    )
    assert settings.hipchat_hosts == ("api.hipchat.com", "127.0.0.1:8123")
    assert trusting(settings, hipchat) is settings
    assert trusting(settings_for(), hipchat).hipchat_hosts == ("hipchat.test", "127.0.0.1:8123")


@pytest.mark.anyio
async def test_install_connects_to_an_app_once_and_aclose_closes_it(tmp_path: Path) -> None:
    hipchat = FakeHipChat()
    app = create_test_app(hipchat, addon_settings(hipchat, store_url=f"sqlite:///{tmp_path}/a.db"))
    first = await hipchat.install(app, room_id=1)
    second = await hipchat.install(app, room_id=2)
    assert first.addon is second.addon is hipchat.peer(app)
    assert first.addon.base_url == httpx.URL("http://addon.test")
    await hipchat.aclose()
    assert first.addon.is_closed
    await app.state.addon.aclose()


@pytest.mark.anyio
async def test_a_refusal_that_is_not_json_is_quoted() -> None:
    async def not_an_addon(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("  no add-on here  ", status_code=503)(scope, receive, send)

    hipchat = FakeHipChat()
    with pytest.raises(FakeHipChatError, match=r"^descriptor answered 503: no add-on here$"):
        await hipchat.install(not_an_addon)
    await hipchat.aclose()
