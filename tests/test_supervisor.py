"""``serve --workers N``'s supervisor: real worker processes, each on its own listening socket.

The supervisor runs in the test's process (so its loop is measured) with real spawned workers
serving the add-on on Redis; ``serve`` itself runs as a real process where the exit status and
the signals matter. Which process holds which socket is read from /proc, as bench/scale.py does.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from addon.errors import ConfigError
from addon.server import uvicorn_options
from addon.supervisor import Supervisor, WorkerSpec, _describe, bind_reuseport, check_port
from tests.helpers import REPO, free_port, settings_for

pytestmark = pytest.mark.e2e

LISTEN, ESTABLISHED = "0A", "01"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: addon.test\r\n\r\n"


# --- who holds which socket (/proc) -------------------------------------------------------------


def tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of IPv4 TCP sockets in ``state`` whose local port is ``port``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
            found.add(int(fields[9]))
    return found - {0}  # 0: a connection still in a listener's queue, not accepted yet


def inode_of_peer(port: int, client: socket.socket) -> int | None:
    """The server side of ``client``'s connection to ``port``, once a worker accepted it."""
    client_port = client.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if (local, remote, fields[3]) == (port, client_port, ESTABLISHED) and fields[9] != "0":
            return int(fields[9])
    return None


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            found.add(int(link[8:-1]))
    return found


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def listening_workers(parent: int, port: int) -> dict[int, set[int]]:
    """``parent``'s child processes that listen on ``port``, and their listening sockets."""
    listeners = tcp_inodes(port, LISTEN)
    found = {}
    for pid in children(parent):
        try:
            held = socket_inodes(pid) & listeners
        except OSError:  # exited meanwhile
            continue
        if held:
            found[pid] = held
    return found


def wait_for(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return result


def wait_for_workers(parent: int, port: int, count: int) -> dict[int, set[int]]:
    return dict(
        wait_for(
            lambda: (found := listening_workers(parent, port)) and len(found) == count and found,
            f"{count} workers listening on {port}",
        )
    )


def owner(workers: dict[int, set[int]], port: int, client: socket.socket) -> int:
    """The worker that accepted ``client``'s connection."""
    inode = wait_for(lambda: inode_of_peer(port, client), "the connection accepted")
    [pid] = [pid for pid in workers if inode in socket_inodes(pid)]
    return pid


def response_head(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


# --- the supervisor in this process -------------------------------------------------------------


@pytest.fixture
def addon_environ(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a worker builds its app from (``create_app_from_environ``)."""
    monkeypatch.setenv("ADDON_STORE_URL", redis_url)
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    monkeypatch.setenv("ADDON_INTEGRATIONS_PATH", str(REPO / "integrations"))
    monkeypatch.setenv("ADDON_LOG_LEVEL", "warning")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def addon_spec(port: int) -> WorkerSpec:
    options = {"factory": True, "log_level": "warning", **uvicorn_options(settings_for())}
    return WorkerSpec("addon.app:create_app_from_environ", "127.0.0.1", port, options)


def supervise(
    supervisor: Supervisor, user: Callable[[], None], *, then: signal.Signals | None = None
) -> int:
    """``supervisor.run()`` here, in the main thread (signals), while ``user`` acts in another;
    then ``supervisor.stop()``, or the signal ``then`` to this process."""
    failures: list[BaseException] = []

    def act() -> None:
        try:
            user()
        except BaseException as exc:
            failures.append(exc)
        # Once user() got answers, run() is serving, so its handler is in place for the signal.
        if then is None or failures:
            supervisor.stop()
        else:
            os.kill(os.getpid(), then)

    thread = threading.Thread(target=act)
    thread.start()
    try:
        status = supervisor.run()
    finally:
        supervisor.stop()
        thread.join(timeout=60)
    if failures:
        raise failures[0]
    return status


@pytest.mark.usefixtures("addon_environ")
def test_each_worker_listens_on_its_own_socket_and_takes_a_share_of_a_burst() -> None:
    port = free_port()
    counts: collections.Counter[int] = collections.Counter()

    def user() -> None:
        workers = wait_for_workers(os.getpid(), port, 2)
        assert len(set().union(*workers.values())) == 2, "one listening socket per worker"
        assert not socket_inodes(os.getpid()) & tcp_inodes(port, LISTEN), "none in the supervisor"
        # wrk's start: 32 connections at once. On one shared socket the worker that woke first
        # took most of them (27/5, 32/0); here the kernel hashes each to a worker's own socket.
        burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            for client in burst:
                client.sendall(HEALTHZ)
            for client in burst:
                assert response_head(client).startswith(b"HTTP/1.1 200 OK")
                counts[owner(workers, port, client)] += 1  # kept alive: still held
        finally:
            for client in burst:
                client.close()

    assert supervise(Supervisor(addon_spec(port), 2), user) == 0
    assert sum(counts.values()) == 32 and len(counts) == 2, counts
    # Each connection is a fair coin between two sockets: fewer than 4 of 32 is ~1 in 400,000.
    assert min(counts.values()) >= 4, counts


@pytest.mark.usefixtures("addon_environ")
def test_a_killed_worker_is_replaced_by_one_that_serves(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()

    def user() -> None:
        first = wait_for_workers(os.getpid(), port, 2)
        victim, survivor = sorted(first)
        os.kill(victim, signal.SIGKILL)
        workers = wait_for(
            lambda: (now := listening_workers(os.getpid(), port)).keys() - first.keys() and now,
            "a new worker listening",
        )
        [replacement] = workers.keys() - {survivor}
        for _ in range(200):  # a new connection per try: the kernel picks a socket per connection
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(HEALTHZ)
                assert response_head(client).startswith(b"HTTP/1.1 200 OK")
                if owner(workers, port, client) == replacement:
                    return
        raise AssertionError("the new worker answered none of 200 connections")

    with caplog.at_level("INFO", logger="addon.supervisor"):
        assert supervise(Supervisor(addon_spec(port), 2), user, then=signal.SIGINT) == 0
    # It died within STEADY seconds of serving: the next one starts after the back-off.
    assert "was killed by SIGKILL; starting another in 1.0 s" in caplog.text
    assert "received SIGINT; stopping the workers" in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler put back"


@pytest.mark.usefixtures("addon_environ")
def test_a_worker_still_draining_after_the_stop_timeout_is_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    stuck = socket.socket()

    def user() -> None:
        [worker] = wait_for_workers(os.getpid(), port, 1)
        stuck.connect(("127.0.0.1", port))  # a request whose body never comes: it holds the drain
        stuck.sendall(b"POST /installable HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        owner({worker: set()}, port, stuck)

    began = time.monotonic()
    with stuck, caplog.at_level("INFO", logger="addon.supervisor"):
        assert supervise(Supervisor(addon_spec(port), 1, stop_timeout=0.5), user) == 0
    assert time.monotonic() - began < 10, "not held for the request's own 10 s read timeout"
    assert "still running 0.5 s after SIGTERM; killing it" in caplog.text
    assert not listening_workers(os.getpid(), port)


def test_a_worker_that_cannot_start_is_tried_again_later_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = WorkerSpec(
        "tests.no_such_module:app", "127.0.0.1", free_port(), {"log_level": "critical"}
    )
    supervisor = Supervisor(spec, 2, backoff=0.2, attempts=3)
    began = time.monotonic()
    with caplog.at_level("INFO", logger="addon.supervisor"):
        assert supervisor.run() == 1
    took = time.monotonic() - began
    messages = [record.getMessage() for record in caplog.records]
    starts = [m for m in messages if m.startswith("started worker")]
    assert 2 * 2 < len(starts) <= 2 * 3, messages  # no more than `attempts` starts per worker
    assert any("trying again in 0.2 s (1 of 3)" in m for m in messages)
    assert any("trying again in 0.4 s (2 of 3)" in m for m in messages)
    assert any("failed to start 3 times in a row" in m for m in messages)
    assert took >= 0.2 + 0.4, "the delays between tries were waited"


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "another-reuseport-server"])
def test_a_taken_port_is_refused_before_any_worker_starts(reuseport: bool) -> None:
    with socket.socket() as holder:
        # Another `serve --workers N` holds its port with SO_REUSEPORT: joining it silently
        # would split its traffic with ours, so that is refused too.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuseport))
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve on 127.0.0.1:{port}: .*in use"):
            check_port("127.0.0.1", port)
        spec = WorkerSpec("addon.app:create_app_from_environ", "127.0.0.1", port, {})
        with pytest.raises(ConfigError):
            Supervisor(spec, 2).run()
    assert check_port("127.0.0.1", 0) > 0, "port 0: a free port, picked once for every worker"


def test_workers_sockets_share_a_port_that_a_plain_listener_holds_alone() -> None:
    with bind_reuseport("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        with bind_reuseport("127.0.0.1", port) as second:
            first.listen()
            second.listen()  # both listen: the kernel spreads connections over the two
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError, match="in use"):
            bind_reuseport("127.0.0.1", plain.getsockname()[1])


# --- serve --workers 2, a real process ----------------------------------------------------------


@pytest.fixture
def serve_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADDON_", "PROMETHEUS_"))}
    return env | {
        "TMPDIR": str(tmp_path),  # where serve makes (and removes) the metrics directory
        "ADDON_STORE_URL": redis_url,
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_LOG_LEVEL": "warning",
    }


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def serve(env: dict[str, str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "addon", "serve", "--workers", "2", "-p", str(port)]
    return subprocess.Popen(command, cwd=cwd, env=env)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_both_workers_gracefully_and_exits_0(
    stop: signal.Signals,
    serve_env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    server = serve(serve_env, port, tmp_path)
    processes.append(server)
    workers = wait_for_workers(server.pid, port, 2)
    # On each worker a request in flight: its head and the first byte of its body sent.
    in_flight: dict[int, socket.socket] = {}
    for _ in range(200):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /installable HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{")
        pid = owner(workers, port, client)
        if pid in in_flight:
            client.close()
            continue
        in_flight[pid] = client
        if len(in_flight) == 2:
            break
    try:
        assert in_flight.keys() == workers.keys()
        server.send_signal(stop)
        wait_for(lambda: not tcp_inodes(port, LISTEN), "both workers stop accepting")
        for client in in_flight.values():
            client.sendall(b"}")  # the request finishes: answered, as a drain should
            assert response_head(client).startswith(b"HTTP/1.1 400 Bad Request")
    finally:
        for client in in_flight.values():
            client.close()
    assert server.wait(timeout=30) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "no worker left"
    assert not list(tmp_path.glob("hipchat-addon-metrics-*")), "the metrics directory removed"


def test_serve_on_a_taken_port_exits_2_with_one_line(
    serve_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "addon", "serve", "--workers", "2", "-p", str(port)]
        result = subprocess.run(
            command, cwd=tmp_path, env=serve_env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"hipchat-addon: cannot serve on 127.0.0.1:{port}: Address already in use; is another "
        "server running there? Stop it, or choose another port with -p"
    )
    assert "worker" not in result.stderr, "no worker was started"


def test_a_worker_killed_by_a_signal_without_a_name_is_described_by_its_number() -> None:
    assert _describe(-signal.SIGKILL) == "was killed by SIGKILL"
    assert _describe(-40) == "was killed by signal 40"  # a real-time signal: no enum member
    assert _describe(3) == "exited with status 3"
