"""Pieces to run the add-on as deployed, on loopback: Redis, replicas, nginx, a live FakeHipChat.

Shared by ``tests/test_balancer.py`` and ``bench/soak.py``. Only public entry points:
``python -m addon serve`` (the ``hipchat-addon serve`` command), ``addon.testing.FakeHipChat``
served by uvicorn on a real socket, and HTTP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from addon.testing import FakeHipChat

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "deploy" / "nginx" / "addon.conf.template"


def free_port() -> int:
    """A loopback port that was free a moment ago (Redis cannot listen on port 0 and tell)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def envsubst(template: str, values: Mapping[str, str]) -> str:
    """What the nginx image's entrypoint does: fill ``${NAME}`` for the given names only."""
    for name, value in values.items():
        template = template.replace(f"${{{name}}}", value)
    if "${ADDON_" in template:
        raise ValueError("the nginx template has a placeholder nobody fills")
    return template


def nginx_conf(workdir: Path, port: int, upstreams: list[int]) -> Path:
    """A main nginx.conf for a non-root run in ``workdir`` that includes the filled template."""
    servers = " ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams)
    values = {"ADDON_UPSTREAM_SERVERS": servers, "ADDON_PROXY_PORT": f"127.0.0.1:{port}"}
    (workdir / "addon.conf").write_text(envsubst(TEMPLATE.read_text(), values))
    temp = {name: workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    paths = "\n".join(f"    {name}_temp_path {path};" for name, path in temp.items())
    # As root, nginx's workers would switch to `nobody`, who cannot write to a private tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = (
        f"{user}daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    access_log {workdir / 'access.log'};\n{paths}\n"
        f"    include {workdir / 'addon.conf'};\n}}\n"
    )
    conf = workdir / "nginx.conf"
    conf.write_text(main)
    return conf


def start_nginx(
    executable: str, workdir: Path, port: int, upstreams: list[int]
) -> subprocess.Popen[bytes]:
    conf = nginx_conf(workdir, port, upstreams)
    return subprocess.Popen([executable, "-p", str(workdir), "-c", str(conf)])


def redis_answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    executable: str, workdir: Path, port: int, *, durable: bool, timeout: float = 10
) -> subprocess.Popen[bytes]:
    """A private redis-server on ``port``; ``durable``: AOF with fsync on every write, so a
    restart keeps every acknowledged write."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--dir", str(workdir)]
    command += ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
    command += [] if durable else ["--appendonly", "no"]
    with (workdir / "redis.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not redis_answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            log_text = (workdir / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server did not start on port {port}:\n{log_text}")
        time.sleep(0.02)
    return process


def start_replica(
    workdir: Path,
    hipchat: FakeHipChat,
    port: int,
    public_url: str,
    store_url: str,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``hipchat-addon serve`` on ``port``, integrations from ``workdir/integrations``; its
    output goes to ``log`` (appended) when given."""
    environment = {
        **os.environ,
        "ADDON_BASE_URL": public_url,
        "ADDON_STORE_URL": store_url,
        "ADDON_HIPCHAT_HOSTS": hipchat.host,
        "ADDON_INTEGRATIONS_PATH": str(workdir / "integrations"),
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_LOG_LEVEL": "warning",
        **(env or {}),
    }
    command = [sys.executable, "-m", "addon", "serve", "--port", str(port)]
    if log is None:
        return subprocess.Popen(command, cwd=workdir, env=environment)
    with log.open("ab") as output:
        return subprocess.Popen(
            command, cwd=workdir, env=environment, stdout=output, stderr=subprocess.STDOUT
        )


async def wait_ready(
    url: str, processes: list[subprocess.Popen[bytes]], within: float = 20
) -> None:
    """Poll ``url/readyz`` until it answers 200; fail when a process exits or time runs out."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a process exited before {url} became ready")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not become ready within {within} s")
            await asyncio.sleep(0.1)


@contextmanager
def serve_fake(*, token_lifetime: int = 3600) -> Iterator[FakeHipChat]:
    """A FakeHipChat served by uvicorn on a loopback socket, in a thread."""
    port = free_port()
    hipchat = FakeHipChat(base_url=f"http://127.0.0.1:{port}", token_lifetime=token_lifetime)
    config = uvicorn.Config(
        hipchat.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake HipChat did not start")
        time.sleep(0.02)
    try:
        yield hipchat
    finally:
        server.should_exit = True
        thread.join(timeout=10)
