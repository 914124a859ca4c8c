"""SIGTERM to a real server with commands in flight: they finish within the bound, or the room is
told. The add-on runs as ``hipchat-addon serve`` in its own process; the fake HipChat listens on a
real socket, because the add-on posts the late replies to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from addon.testing import FakeHipChat
from tests.helpers import REPO

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# /slow goes on only once the test has created the file GO, after SIGTERM: so it is still
# running when the signal arrives, and outlives any reply window, without a timed sleep.
SLOW = """
    import asyncio
    from pathlib import Path

    from addon import Integration, RoomMessage

    integration = Integration(key="slow")
    GO = Path(__file__).with_name("go")


    @integration.command("slow")
    async def slow(message: RoomMessage) -> None:
        for _ in range(2000):  # 20 s at most
            if GO.exists():
                break
            await asyncio.sleep(0.01)
        await message.reply("finished after SIGTERM")


    @integration.command("stuck")
    async def stuck(message: RoomMessage) -> None:
        await asyncio.sleep(600)
"""


def start_server(tmp_path: Path, hipchat: FakeHipChat, port: int) -> subprocess.Popen[bytes]:
    (tmp_path / "integrations").mkdir()
    (tmp_path / "integrations" / "slow.py").write_text(textwrap.dedent(SLOW))
    env = {
        **os.environ,
        "ADDON_BASE_URL": f"http://127.0.0.1:{port}",
        "ADDON_STORE_URL": f"sqlite:///{tmp_path / 'addon.db'}",
        "ADDON_HIPCHAT_HOSTS": hipchat.base_url.removeprefix("http://"),
        "ADDON_INTEGRATIONS_PATH": str(tmp_path / "integrations"),
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_REPLY_WINDOW": "0.01",  # /slow and /stuck outlive any window
        "ADDON_SHUTDOWN_TIMEOUT": "3",
    }
    command = [sys.executable, "-m", "addon", "serve", "--port", str(port)]
    return subprocess.Popen(command, cwd=tmp_path, env=env)


async def test_sigterm_lets_commands_finish_within_the_bound_and_tells_the_rest(
    tmp_path: Path, live_hipchat: FakeHipChat, unused_port: int
) -> None:
    server = start_server(tmp_path, live_hipchat, unused_port)
    try:
        base = f"http://127.0.0.1:{unused_port}"
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(base_url=base) as addon:
            while True:
                assert server.poll() is None, "the add-on exited early"
                try:
                    if (await addon.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the add-on did not start"
                    await asyncio.sleep(0.1)
            room = await live_hipchat.install(addon, room_id=1)
            slow = await live_hipchat.send_message(room, "/slow")
            stuck = await live_hipchat.send_message(room, "/stuck")
        assert slow is not None and slow.status_code == 204
        assert stuck is not None and stuck.status_code == 204

        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        (tmp_path / "integrations" / "go").touch()
        # uvicorn re-raises the signal once its graceful shutdown is complete.
        assert server.wait(timeout=15) in (0, -signal.SIGTERM)
        took = time.monotonic() - stopping
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    assert took < 3 + 4, f"shutdown took {took:.1f} s, past the 3 s bound and uvicorn's margin"
    texts = live_hipchat.notifications(1)
    assert "finished after SIGTERM" in texts
    assert "/stuck was stopped: the add-on is restarting" in texts
