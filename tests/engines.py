"""Real Redis Cluster and Sentinel set-ups on loopback, started by the tests (redis-server).

``RedisProcesses`` owns every process it starts and kills them all in ``close``; the fixtures in
conftest.py call it in their teardown.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SERVICE = "mymaster"
_START_TIMEOUT = 20.0


class RedisProcesses:
    """Starts redis-server processes (plain, cluster nodes, sentinels) under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._server = shutil.which("redis-server")
        self._cli = shutil.which("redis-cli")
        if self._server is None or self._cli is None:
            pytest.fail("redis-server and redis-cli must be on PATH (apt-get install redis-server)")

    def start(self, *args: str, config: str = "", port: int | None = None) -> int:
        """Start a redis-server with ``args`` (after ``config``, a file's text); return its port."""
        port = port or free_port()
        directory = self.workdir / str(port)
        directory.mkdir(exist_ok=True)
        conf = directory / "redis.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n{config}")
        command = [str(self._server), str(conf), "--save", "", "--appendonly", "no", *args]
        with (directory / "log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes[port] = process
        self._wait(lambda: _answers(port), f"redis-server on port {port}", port)
        return port

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli -p port args…``'s output (raises when it fails)."""
        command = [str(self._cli), "-h", "127.0.0.1", "-p", str(port), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def stop(self, port: int, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` to the server on ``port`` and wait for it to exit."""
        process = self.processes.pop(port)
        process.send_signal(sig)
        process.wait(timeout=15)

    def close(self) -> None:
        """Kill every process still running."""
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait()
        self.processes.clear()

    def _wait(self, condition: Callable[[], bool], what: str, port: int | None = None) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            process = self.processes.get(port) if port else None
            if process is not None and process.poll() is not None:
                log = (self.workdir / str(port) / "log").read_text(errors="replace")
                pytest.fail(f"{what} exited with status {process.returncode}:\n{log}")
            if condition():
                return
            time.sleep(0.05)
        pytest.fail(f"{what} was not ready within {_START_TIMEOUT} s")

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until it holds (failing the test after a generous timeout)."""
        self._wait(condition, what)


def start_cluster(processes: RedisProcesses, masters: int = 3) -> str:
    """A Redis Cluster of ``masters`` masters and no replicas; its ``redis+cluster://`` URL."""
    config = "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n"
    ports = [processes.start(config=config, port=_free_cluster_port()) for _ in range(masters)]
    nodes = [f"127.0.0.1:{port}" for port in ports]
    processes.cli(
        ports[0], "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"
    )
    for port in ports:
        processes.wait_until(
            lambda port=port: "cluster_state:ok" in processes.cli(port, "cluster", "info"),  # type: ignore[misc]
            f"cluster node {port}",
        )
    return "redis+cluster://" + ",".join(nodes)


def start_sentinel(processes: RedisProcesses, *, for_failover: bool = False) -> tuple[str, int]:
    """A master, a replica, three sentinels; the ``redis+sentinel://`` URL and the master's port.

    The master accepts a write only while a replica is connected and at most 10 s behind
    (``min-replicas-to-write 1``). The replica does not require one, so that it takes writes
    alone once promoted. ``for_failover`` waits until the sentinels know each other (a failover
    needs a majority of them), which takes a few seconds of their hello messages.
    """
    # No diskless-sync delay: the replica's first sync starts at once instead of after 5 s.
    master = processes.start(
        config="min-replicas-to-write 1\nmin-replicas-max-lag 10\nrepl-diskless-sync-delay 0\n"
    )
    replica = processes.start("--replicaof", "127.0.0.1", str(master))
    processes.wait_until(
        lambda: "master_link_status:up" in processes.cli(replica, "info", "replication"),
        "the replica's link to its master",
    )
    sentinel_config = (
        f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    sentinels = [processes.start("--sentinel", config=sentinel_config) for _ in range(3)]
    for port in sentinels if for_failover else ():
        processes.wait_until(
            lambda port=port: _sentinel_knows_everyone(processes, port),  # type: ignore[misc]
            f"sentinel {port} to see the replica and the other sentinels",
        )
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinels)
    return f"redis+sentinel://{hosts}/{SERVICE}", master


def sentinel_master_port(processes: RedisProcesses, sentinel_url: str) -> int:
    """The port of the master the first sentinel names now."""
    port = int(sentinel_url.split("//")[1].split(",")[0].split(":")[1])
    answer = processes.cli(port, "sentinel", "get-master-addr-by-name", SERVICE).split()
    return int(answer[1])


def _sentinel_knows_everyone(processes: RedisProcesses, port: int) -> bool:
    fields = processes.cli(port, "sentinel", "master", SERVICE).split("\n")
    info = dict(zip(fields[::2], fields[1::2], strict=False))
    return info.get("num-slaves") == "1" and info.get("num-other-sentinels") == "2"


def _answers(port: int) -> bool:
    """True when the server on ``port`` answers PING (or asks for the password first)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _free_cluster_port() -> int:
    """A free port P at most 55535 whose cluster bus port P + 10000 is free too."""
    for _ in range(100):
        port = random.randrange(20000, 55535)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    pytest.fail("found no free port pair for a cluster node")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (nothing, at least, when it was picked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
