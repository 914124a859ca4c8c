"""Three replicas behind the real nginx, configured by deploy/nginx/addon.conf.template.

The same template docker-compose.yml mounts into the nginx image is filled here for loopback and
run by Debian's nginx in front of three ``hipchat-addon serve`` processes sharing one private
Redis. HipChat (the fake, on a real socket) installs and sends commands through the balancer:
the commands are spread over all three replicas, each runs exactly once (duplicates included),
and traffic keeps flowing when a replica is stopped.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from addon.testing import FakeHipChat
from addon.testing.fake import Installed
from bench.cluster_kit import find_nginx, start_nginx, start_replica, wait_ready
from tests.conftest import _free_port, _stop

pytestmark = [pytest.mark.anyio, pytest.mark.system]

REPLICAS = 3

# Each command appends "<pid> <args>" to a file: which replica ran it, and how many times.
TALLY = """
    import os

    from addon import Integration, RoomMessage

    integration = Integration(key="tally")


    @integration.command("tally")
    def tally(message: RoomMessage) -> str:
        with open(os.environ["TALLY_FILE"], "a") as file:
            file.write(f"{os.getpid()} {message.args}\\n")
        return f"counted {message.args}"
"""


@dataclass
class Cluster:
    url: str
    replicas: list[subprocess.Popen[bytes]]
    tally: Path

    def runs(self) -> Counter[str]:
        """How many times each command argument ran."""
        lines = self.tally.read_text().splitlines() if self.tally.exists() else []
        return Counter(line.split(" ", 1)[1] for line in lines)

    def pids(self) -> set[int]:
        lines = self.tally.read_text().splitlines() if self.tally.exists() else []
        return {int(line.split(" ", 1)[0]) for line in lines}


@pytest.fixture
def nginx() -> str:
    executable = find_nginx()
    if executable is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light); .ci/run installs it")
    return executable


@pytest.fixture
def redis_db(redis_server: str) -> Iterator[str]:
    """A database of the test Redis that only this test uses, emptied before and after."""
    url = redis_server.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
async def cluster(
    tmp_path: Path, nginx: str, redis_db: str, live_hipchat: FakeHipChat
) -> AsyncIterator[Cluster]:
    (tmp_path / "integrations").mkdir()
    (tmp_path / "integrations" / "tally.py").write_text(textwrap.dedent(TALLY))
    proxy_port, ports = _free_port(), [_free_port() for _ in range(REPLICAS)]
    url = f"http://127.0.0.1:{proxy_port}"
    tally = {"TALLY_FILE": str(tmp_path / "tally.txt")}
    replicas = [start_replica(tmp_path, live_hipchat, p, url, redis_db, tally) for p in ports]
    proxy = None
    try:
        proxy = start_nginx(nginx, tmp_path, proxy_port, ports)
        for port in ports:
            await wait_ready(f"http://127.0.0.1:{port}", replicas)
        await wait_ready(url, [proxy])
        yield Cluster(url, replicas, tmp_path / "tally.txt")
    finally:
        for process in [*replicas, *([proxy] if proxy else [])]:
            if process.poll() is None:
                _stop(process)


async def send_commands(
    hipchat: FakeHipChat, room: Installed, names: list[str], *, twice: bool = False
) -> None:
    for name in names:
        for _ in range(2 if twice else 1):
            response = await hipchat.send_message(room, f"/tally {name}", message_id=name)
            assert response is not None and response.status_code in (200, 204), response


async def test_nginx_spreads_commands_over_the_replicas_and_survives_losing_one(
    cluster: Cluster, live_hipchat: FakeHipChat
) -> None:
    async with httpx.AsyncClient(base_url=cluster.url) as addon:
        room = await live_hipchat.install(addon, room_id=1)
        first = [f"a{i}" for i in range(12)]
        # Each message is delivered twice (as HipChat does on a retry), likely to two replicas.
        await send_commands(live_hipchat, room, first, twice=True)
        assert cluster.runs() == Counter(first), "every command runs exactly once"
        assert cluster.pids() == {p.pid for p in cluster.replicas}, "all replicas took commands"

        stopped = cluster.replicas[0]
        stopped.send_signal(signal.SIGTERM)
        stopped.wait(timeout=15)
        second = [f"b{i}" for i in range(9)]
        await send_commands(live_hipchat, room, second)
    runs = cluster.runs()
    assert runs == Counter(first + second)
    late = {line.split(" ", 1)[0] for line in cluster.tally.read_text().splitlines()[12:]}
    assert late and str(stopped.pid) not in late
    assert sorted(live_hipchat.notifications(1)) == sorted(f"counted {n}" for n in first + second)
