"""Throughput of the add-on's ``/echo`` webhook against floor apps, on loopback. See README.md.

    python bench/run.py [--installations 20] [--concurrency 32] [--rounds 3] [--seconds 3]

Starts a private redis-server, a FakeHipChat on a real socket, the add-on (uvicorn, one worker,
Redis store) and three floor apps (``bench/floors.py``), installs the add-on N times through the
real install flow, then drives every target with the same load generator in alternating rounds.
Prints a table and writes ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
import uvicorn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from addon.jwt_auth import sign_jwt  # noqa: E402
from addon.testing import FakeHipChat, Installed  # noqa: E402

RESULTS = REPO / "bench" / "results"
TARGETS = ("addon", "floor-a", "floor-b", "floor-c")
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{process.args!r} exited early:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    sys.exit(f"{process.args!r} did not listen on {port} within {START_TIMEOUT} s")


@contextlib.contextmanager
def started(
    command: list[str], port: int, workdir: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run ``command`` until the block ends; it must listen on ``port`` first."""
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
    try:
        wait_for_port(port, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def uvicorn_command(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        *extra,
    ]


@contextlib.asynccontextmanager
async def served(app: Any, port: int) -> AsyncIterator[None]:
    """Serve ``app`` (the fake HipChat) with uvicorn in this process, on a real socket."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


class Load:
    """One target's samples: latencies (s) and counts over the rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.errors = 0
        self.statuses: dict[int, int] = {}

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        count = len(ordered)

        def pct(p: float) -> float:
            return ordered[min(count - 1, int(p * count))] * 1000 if count else float("nan")

        return {
            "requests": count,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": round(self.elapsed, 3),
            "requests_per_s": round(count / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(pct(0.50), 3),
            "p99_ms": round(pct(0.99), 3),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3) if count else float("nan"),
        }


ID_MARK = "@@id@@"


@dataclasses.dataclass(frozen=True)
class Sender:
    """Signed ``/echo`` webhooks from one installation, as HipChat sends them.

    The body is serialised once with a mark where the message id goes, so that the load generator
    spends as little as possible per request (it shares the machine with the targets).
    """

    template: str
    headers: dict[str, str]

    @classmethod
    def for_room(cls, hipchat: FakeHipChat, installed: Installed) -> Sender:
        token = sign_jwt(
            installed.oauth_id,
            installed.oauth_secret,
            now=time.time(),
            sub=1001,
            room_id=installed.room,
            lifetime=3600,
        )
        item = {
            "message": hipchat.message(f"/echo hello {ID_MARK}", message_id=f"bench-{ID_MARK}"),
            "room": hipchat.room(installed.room),
        }
        body = {"event": "room_message", "item": item, "oauth_client_id": installed.oauth_id}
        headers = {"Authorization": f"JWT {token}", "Content-Type": "application/json"}
        return cls(json.dumps(body), headers)

    def body(self, message_id: int) -> bytes:
        """The webhook body with a fresh message id (so no delivery counts as a repeat)."""
        return self.template.replace(ID_MARK, str(message_id)).encode()


async def drive(
    client: httpx.AsyncClient,
    url: str,
    rooms: list[Sender],
    load: Load,
    *,
    concurrency: int,
    seconds: float,
    ids: Iterator[int],
) -> None:
    """``concurrency`` workers post webhooks to ``url`` for ``seconds``, spread over ``rooms``."""
    deadline = time.perf_counter() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            counter += 1
            sender = rooms[counter % len(rooms)]
            body, headers = sender.body(next(ids)), sender.headers
            started_at = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                load.errors += 1
                continue
            load.latencies.append(time.perf_counter() - started_at)
            load.statuses[response.status_code] = load.statuses.get(response.status_code, 0) + 1
            if response.status_code != 200 or not response.json()["message"].startswith("hello"):
                load.errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.elapsed += time.perf_counter() - began


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    redis_port, hipchat_port = free_port(), free_port()
    ports = {name: free_port() for name in TARGETS}
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    hipchat = FakeHipChat(base_url=f"http://127.0.0.1:{hipchat_port}")
    addon_url = f"http://127.0.0.1:{ports['addon']}"
    base_env = {**os.environ, "PYTHONPATH": str(REPO)}
    addon_env = {
        **base_env,
        "ADDON_BASE_URL": addon_url,
        "ADDON_STORE_URL": redis_url,
        "ADDON_HIPCHAT_HOSTS": f"127.0.0.1:{hipchat_port}",
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_LOG_LEVEL": "WARNING",
    }
    redis_command = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]

    with contextlib.ExitStack() as stack:
        stack.enter_context(started(redis_command, redis_port, workdir, "redis"))
        stack.enter_context(
            started(
                uvicorn_command("addon.app:create_app_from_environ", ports["addon"]),
                ports["addon"],
                workdir,
                "addon",
                addon_env,
            )
        )
        async with served(hipchat.app, hipchat_port):
            limits = httpx.Limits(max_connections=args.concurrency + 4)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                setup = httpx.AsyncClient(base_url=addon_url, timeout=30)
                async with setup:
                    installed = [
                        await hipchat.install(setup, room_id=index + 1)
                        for index in range(args.installations)
                    ]
                    descriptor = await hipchat.descriptor(setup)
                hook = next(
                    h
                    for h in descriptor["capabilities"]["webhook"]
                    if re.search(h.get("pattern", ""), "/echo hello")
                )
                path = httpx.URL(hook["url"]).path
                secrets = {i.oauth_id: i.oauth_secret for i in installed}
                (workdir / "secrets.json").write_text(json.dumps(secrets))
                store = redis.asyncio.Redis.from_url(redis_url)
                async with store:
                    for oauth_id, secret in secrets.items():
                        await store.set(f"bench:secret:{oauth_id}", secret)
                floor_env = {
                    **base_env,
                    "BENCH_SECRETS": str(workdir / "secrets.json"),
                    "BENCH_REDIS_URL": redis_url,
                }
                for name in TARGETS[1:]:
                    command = uvicorn_command(
                        "floors:create", ports[name], "--app-dir", str(REPO / "bench")
                    )
                    env = {**floor_env, "BENCH_FLOOR": name[-1]}
                    stack.enter_context(started(command, ports[name], workdir, name, env))

                rooms = [Sender.for_room(hipchat, i) for i in installed]
                urls = {name: f"http://127.0.0.1:{ports[name]}{path}" for name in TARGETS}
                loads = {name: Load() for name in TARGETS}
                tokens_before = len(hipchat.token_requests())
                ids = itertools.count()  # every delivery is a new message (no dedup hits)
                warm = {name: Load() for name in TARGETS}
                for name in TARGETS:  # warm-up, not counted
                    await drive(
                        client,
                        urls[name],
                        rooms,
                        warm[name],
                        concurrency=args.concurrency,
                        seconds=0.5,
                        ids=ids,
                    )
                for round_index in range(args.rounds):
                    order = TARGETS if round_index % 2 == 0 else TARGETS[::-1]
                    for name in order:
                        await drive(
                            client,
                            urls[name],
                            rooms,
                            loads[name],
                            concurrency=args.concurrency,
                            seconds=args.seconds,
                            ids=ids,
                        )
                tokens_during = len(hipchat.token_requests()) - tokens_before

    summaries = {name: load.summary() for name, load in loads.items()}
    floor_c = summaries["floor-c"]["requests_per_s"]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "parameters": {
            "installations": args.installations,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
        },
        "targets": summaries,
        "ratio_addon_to_floor_c": (
            round(summaries["addon"]["requests_per_s"] / floor_c, 3) if floor_c else None
        ),
        "token_requests": {
            "total": len(hipchat.token_requests()),
            "during_load": tokens_during,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installations", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per target per round")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="addon-bench-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'target':<10} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for name, row in result["targets"].items():
        print(
            f"{name:<10} {row['requests_per_s']:>10.1f} {row['p50_ms']:>9.2f} "
            f"{row['p99_ms']:>9.2f} {row['errors']:>7}"
        )
    print(f"add-on / floor (c): {result['ratio_addon_to_floor_c']}")
    tokens = result["token_requests"]
    print(
        f"token requests seen by the fake: {tokens['total']} ({tokens['during_load']} under load)"
    )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
