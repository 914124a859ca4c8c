"""Throughput of the add-on's ``/echo`` webhook against floor apps and Slack Bolt, on loopback.

    python bench/run.py [--installations 1000] [--concurrency 32] [--rounds 4] [--seconds 5]

Starts a private redis-server, a FakeHipChat on a real socket, the add-on twice
(``hipchat-addon serve``, one worker; Redis store and SQLite store), installs each N times through
the real install flow, starts three floor apps (``bench/floors.py``) and Slack Bolt twice
(``bench/bolt_app.py``; default and ``process_before_response``), all on uvloop + httptools, then
drives every target with wrk (``bench/wrk/requests.lua``) in alternating rounds. Writes
``bench/results/latest.{json,md,png}``. Needs ``redis-server`` and ``wrk`` on PATH and
``bench/requirements.txt`` installed; it installs nothing itself. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import hashlib
import hmac
import json
import os
import platform
import re
import resource
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
from urllib.parse import urlencode

import httpx
import redis.asyncio
import uvicorn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from addon.jwt_auth import sign_jwt  # noqa: E402
from addon.testing import FakeHipChat, Installed  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LUA = BENCH / "wrk" / "requests.lua"
TARGETS = ("addon", "floor-a", "floor-b", "floor-c", "bolt", "bolt-pbr", "addon-sqlite")
BOLT_TARGETS = ("bolt", "bolt-pbr")
# Every target runs on the production stack (issue 9, item 6): uvloop and httptools, named
# explicitly so that a missing package fails the start instead of falling back to asyncio/h11.
STACK = ("--loop", "uvloop", "--http", "httptools")
# Shared objects whose presence in a server's memory map proves the stack it runs on.
STACK_MODULES = {"uvloop": "uvloop/loop.", "httptools": "httptools/parser/parser."}
# Diagnostic, with --floor-c3: floor-c plus the add-on's other two Redis round trips.
C3 = "floor-c3"
START_TIMEOUT = 30.0
ID_MARK = "@@id@@"
JWT_MARK = "@@jwt@@"
SLACK_SECRET = "bench-slack-signing-secret"
JWT_LIFETIME = 3600  # the add-on refuses a JWT whose exp - iat passes 1 h (plus its leeway)
# The add-on accepts a JWT once (its jti is remembered), so its targets get a pool of one-time
# JWTs, signed before each wrk run and sized for this rate (floor-a, the fastest, is near 6,000).
POOL_RATE = 10_000
FRESH_JWT_TARGETS = ("addon", "addon-sqlite")
ROUND_TRIP_TARGETS = ("addon", "floor-c")  # Redis's counters are read around their first round
# ... and around this many webhooks sent one at a time after the rounds: with one in flight no
# two webhooks share a read of Redis's, so the reads per webhook are its own round trips.
ONE_AT_A_TIME = 200
# Targets (issue 9): add-on >= 1.2 x floor(c) req/s with p99 <= floor(c)'s, >= 1.0 x Bolt,
# >= 0.9 x Bolt in process_before_response mode (aim), CPU per request <= floor(c)'s, one store
# round trip per webhook, `import addon.app` <= 250 ms.
MIN_RATE_VS_FLOOR_C = 1.2
MAX_P99_VS_FLOOR_C = 1.0
MIN_RATE_VS_BOLT = 1.0
MIN_RATE_VS_BOLT_PBR = 0.9
MAX_CPU_VS_FLOOR_C = 1.0
ROUND_TRIPS_PER_WEBHOOK = 1
ROUND_TRIPS_TOLERANCE = 0.05  # background commands over a round (none expected)
MAX_IMPORT_MS = 250.0
IMPORT_RUNS = 5


def require_tools() -> tuple[str, str]:
    """redis-server and wrk from PATH, and the bench-only Python packages; exit clearly if not."""
    missing = []
    redis_server, wrk = shutil.which("redis-server"), shutil.which("wrk")
    if redis_server is None:
        missing.append("redis-server (apt-get install redis-server)")
    if wrk is None:
        missing.append("wrk (apt-get install wrk)")
    for module in ("slack_bolt", "aiohttp", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (pip install -r bench/requirements.txt)")
    if missing or redis_server is None or wrk is None:
        sys.exit("bench needs: " + "; ".join(missing))
    return redis_server, wrk


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
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; it must listen on ``port`` first."""
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
    try:
        wait_for_port(port, process, log)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def uvicorn_command(app: str, port: int, *extra: str, workers: int = 1) -> list[str]:
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
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
        *STACK,
        *extra,
    ]


def addon_command(port: int, *, workers: int = 1) -> list[str]:
    """The add-on as it is deployed: ``hipchat-addon serve`` (uvloop, httptools, its bounds)."""
    serve = [sys.executable, "-m", "addon", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return [*serve, "--workers", str(workers)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from /proc/<pid>/stat (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of ``pid`` and its child processes (uvicorn's workers under N > 1)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                total += cpu_seconds(int(child))
    return total


def server_stack(pid: int) -> dict[str, bool]:
    """Whether the server has loaded uvloop's and httptools' extensions (/proc/<pid>/maps)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name: mark in maps for name, mark in STACK_MODULES.items()}


def import_ms(runs: int = IMPORT_RUNS) -> dict[str, Any]:
    """``import addon.app`` in a fresh interpreter, by ``python -X importtime``, in ms.

    The cost is the cumulative time of the top-level ``addon`` entries (the package's
    ``__init__`` imports ``addon.app``, so that one is nested under ``addon``). It is measured
    as a deployed server imports it: with the package's bytecode compiled, as pip compiles an
    installed wheel's modules (the Docker image installs one). A checkout run with
    ``PYTHONDONTWRITEBYTECODE`` set never writes ``__pycache__``, and would compile every
    module on every start (about 0.2 s more here), so the bench compiles the package first
    (``compileall``).
    """
    compileall.compile_dir(REPO / "addon", quiet=1)
    samples = [_import_once() for _ in range(runs)]
    return {
        "median_ms": round(statistics.median(samples), 1),
        "min_ms": round(min(samples), 1),
        "runs_ms": [round(x, 1) for x in samples],
        "bytecode": "compiled (compileall), as in an installed wheel",
    }


def _import_once() -> float:
    command = [sys.executable, "-X", "importtime", "-c", "import addon.app"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return _importtime_ms(done.stderr)


def _importtime_ms(report: str) -> float:
    total_us = 0
    for line in report.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        name = parts[2]
        top_level = len(name) - len(name.lstrip()) == 1
        if top_level and (name.strip() == "addon" or name.strip().startswith("addon.")):
            total_us += int(parts[1])
    return total_us / 1000


async def redis_counters(store: redis.asyncio.Redis) -> dict[str, int]:
    """Redis's read events and per-command call counts, for deltas over a round."""
    info = await store.info("stats", "commandstats")  # one INFO: one read, one command
    counters = {"reads": int(info["total_reads_processed"])}
    for name, stats in info.items():
        if name.startswith("cmdstat_"):
            counters[name.removeprefix("cmdstat_")] = int(stats["calls"])
    return counters


def store_round_trips(
    before: dict[str, int], after: dict[str, int], requests: int
) -> dict[str, Any]:
    """Round trips and commands per webhook over one round of the add-on, from Redis's counters.

    A round trip is one read event of Redis (a pipeline or a script's whole batch arrives in
    one); the ``INFO`` that took the ``after`` counters counts its own read, left out here.
    Commands are counted by name (commands run inside a script count too, as Redis counts them).
    """
    reads = after["reads"] - before["reads"] - 1
    commands = {
        name: round((after[name] - before.get(name, 0)) / requests, 3)
        for name in sorted(after)
        if name not in ("reads", "info") and after[name] != before.get(name, 0)
    }
    return {
        "requests": requests,
        "round_trips_per_webhook": round(reads / requests, 3) if requests else None,
        "commands_per_webhook": round(sum(commands.values()), 3),
        "commands": commands,
    }


async def one_at_a_time(
    store: redis.asyncio.Redis,
    url: str,
    hipchat: FakeHipChat,
    installed: list[Installed],
    count: int = ONE_AT_A_TIME,
) -> dict[str, Any]:
    """``store_round_trips`` over ``count`` ``/echo`` webhooks sent one after another, each with
    a fresh JWT and message id; every one must be answered 2xx.

    Under load the add-on's commands from concurrent webhooks share Redis's reads (its lane
    pipelines them), so the reads of a round count fewer round trips than webhooks make.
    """
    before = await redis_counters(store)
    async with httpx.AsyncClient(timeout=10) as client:
        for index in range(count):
            one = installed[index % len(installed)]
            text = f"/echo one at a time {index}"
            message = hipchat.message(text, message_id=f"one-{index}-{os.urandom(4).hex()}")
            item = {"message": message, "room": hipchat.room(one.room)}
            body = {"event": "room_message", "item": item, "oauth_client_id": one.oauth_id}
            headers = {"Authorization": f"JWT {sign(one, time.time())}"}
            response = await client.post(url, json=body, headers=headers)
            if not response.is_success:
                raise SystemExit(f"{url} answered {response.status_code}: {response.text[:200]}")
    after = await redis_counters(store)
    return store_round_trips(before, after, count)


def rss_mib(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB, from /proc (Linux)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


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


async def install_many(
    hipchat: FakeHipChat, addon_url: str, count: int, parallel: int
) -> tuple[list[Installed], float]:
    """Install the add-on ``count`` times (a room each), ``parallel`` at a time; (all, seconds)."""
    gate = asyncio.Semaphore(parallel)
    limits = httpx.Limits(max_connections=parallel)
    async with httpx.AsyncClient(base_url=addon_url, timeout=60, limits=limits) as client:

        async def one(room: int) -> Installed:
            async with gate:
                return await hipchat.install(client, room_id=room)

        began = time.perf_counter()
        installed = await asyncio.gather(*(one(index + 1) for index in range(count)))
        return list(installed), time.perf_counter() - began


# -- request files for wrk ---------------------------------------------------------------------


async def echo_webhook_path(hipchat: FakeHipChat, base_url: str) -> str:
    """The path of the descriptor's webhook that ``/echo hello`` matches, at ``base_url``."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        descriptor = await hipchat.descriptor(client)
    hook = next(
        h
        for h in descriptor["capabilities"]["webhook"]
        if re.search(h.get("pattern", ""), "/echo hello")
    )
    return httpx.URL(hook["url"]).path


def request_line(path: str, headers: dict[str, str], body: str) -> str:
    """One line of a request file (see bench/wrk/requests.lua)."""
    if "\t" in body or "\n" in body:
        raise ValueError("request bodies must be single-line without tabs")
    return f"{path}\t" + "\x1f".join(f"{k}: {v}" for k, v in headers.items()) + f"\t{body}\n"


def sign(one: Installed, now: float) -> str:
    return sign_jwt(
        one.oauth_id, one.oauth_secret, now=now, sub=1001, room_id=one.room, lifetime=JWT_LIFETIME
    )


def hipchat_requests(
    path: str, hipchat: FakeHipChat, installed: list[Installed], *, one_time: bool = False
) -> str:
    """One ``/echo`` webhook template per installation; wrk fills in the message id.

    ``one_time``: the JWT is left as a mark, for wrk to fill from a pool (``jwt_pool``);
    otherwise one JWT per installation is signed here and reused (the floors accept that).
    """
    lines = []
    now = time.time()
    for one in installed:
        token = JWT_MARK if one_time else sign(one, now)
        item = {
            "message": hipchat.message(f"/echo hello {ID_MARK}", message_id=f"bench-{ID_MARK}"),
            "room": hipchat.room(one.room),
        }
        body = {"event": "room_message", "item": item, "oauth_client_id": one.oauth_id}
        headers = {"Authorization": f"JWT {token}", "Content-Type": "application/json"}
        lines.append(request_line(path, headers, json.dumps(body)))
    return "".join(lines)


def jwt_pool(installed: list[Installed], count: int) -> str:
    """``count`` one-time JWTs, line i ``<template index> TAB <jwt>`` for installation i % n."""
    now = time.time()
    lines = []
    for index in range(count):
        slot = index % len(installed)
        lines.append(f"{slot}\t{sign(installed[slot], now)}\n")
    return "".join(lines)


def slack_requests(count: int, nonce: str) -> str:
    """``count`` slash-command requests signed with Slack's v0 scheme, timestamped now."""
    timestamp = str(int(time.time()))
    lines = []
    for index in range(count):
        body = urlencode(
            {
                "token": "legacy-unused",
                "team_id": f"T{index:05d}",
                "team_domain": f"team{index}",
                "channel_id": f"C{index:05d}",
                "channel_name": "bench",
                "user_id": "U01001",
                "user_name": "user1001",
                "command": "/echo",
                "text": f"hello {nonce}-{index}",
                "api_app_id": "ABENCH",
                "response_url": "https://hooks.slack.invalid/commands/1/2/3",
                "trigger_id": f"1.2.{index}",
            }
        )
        base = f"v0:{timestamp}:{body}".encode()
        signature = "v0=" + hmac.new(SLACK_SECRET.encode(), base, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        }
        lines.append(request_line("/slack/events", headers, body))
    return "".join(lines)


# -- driving -----------------------------------------------------------------------------------


class Load:
    """One target's wrk results, merged over the rounds."""

    def __init__(self) -> None:
        self.requests = 0
        self.seconds = 0.0
        self.errors: dict[str, int] = {}
        self.histogram: dict[int, int] = {}  # latency (µs) -> count
        self.rounds: list[dict[str, float]] = []

    def add(self, report: dict[str, Any]) -> None:
        self.requests += report["requests"]
        seconds = report["duration_us"] / 1e6
        self.seconds += seconds
        for kind in ("connect", "read", "write", "status", "timeout"):
            self.errors[kind] = self.errors.get(kind, 0) + report[kind]
        for value, count in report["histogram"]:
            self.histogram[value] = self.histogram.get(value, 0) + count
        self.rounds.append(
            {
                "requests_per_s": round(report["requests"] / seconds, 1),
                "p50_ms": report["p50_us"] / 1000,
                "p99_ms": report["p99_us"] / 1000,
            }
        )

    def percentile(self, p: float) -> float:
        total = sum(self.histogram.values())
        if not total:
            return float("nan")
        rank, seen = p / 100 * total, 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen >= rank:
                return value / 1000
        return max(self.histogram) / 1000

    def summary(self) -> dict[str, Any]:
        total = sum(self.histogram.values())
        mean = sum(v * c for v, c in self.histogram.items()) / total / 1000 if total else None
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
            "mean_ms": round(mean, 3) if mean is not None else None,
            "errors": self.errors,
            "rounds": self.rounds,
        }


def run_wrk(
    wrk: str,
    url: str,
    requests_file: Path,
    nonce: str,
    *,
    concurrency: int,
    seconds: float,
    tokens_file: Path | None = None,
) -> dict[str, Any]:
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    command += ["-s", str(LUA), url, "--", str(requests_file), nonce]
    if tokens_file is not None:
        command.append(str(tokens_file))
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in output.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            report: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return report
    sys.exit(f"wrk gave no result for {url}:\n{output.stdout}\n{output.stderr}")


def profile(name: str, pid: int, seconds: int, drive: Any) -> dict[str, Any]:
    """Sample ``pid`` with py-spy while wrk drives it; the hottest frames, self and total."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = RESULTS / f"profile-{name}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "-d", str(seconds + 1), "-p", str(pid), "-f", "raw"]
    command += ["-o", str(raw), "--nonblocking"]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    drive(name, seconds, f"p{name}", Load())
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        return {"error": err.decode(errors="replace")[-500:]}
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count

    def top(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:25]
        return [(frame, round(100 * count / samples, 1)) for frame, count in ranked]

    return {
        "samples": samples,
        "raw": str(raw.relative_to(REPO)),
        "self": top(own),
        "total": top(total),
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def check_replies(
    urls: dict[str, str], files: dict[str, Path], fresh: dict[str, Installed]
) -> None:
    """One request per target, as wrk sends it; every target must answer 200 with the text.

    ``fresh``: the installation of each one-time-JWT target's first template, to sign for.
    """
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in urls.items():
            line = files[name].read_text().splitlines()[0]
            _, head, body = line.split("\t", 2)
            if name in fresh:
                head = head.replace(JWT_MARK, sign(fresh[name], time.time()))
            headers = dict(pair.split(": ", 1) for pair in head.split("\x1f"))
            body = body.replace(ID_MARK, f"check-{name}")
            response = await client.post(url, content=body.encode(), headers=headers)
            try:
                reply = response.json() if response.status_code == 200 else {}
            except ValueError:
                reply = {}
            text = reply.get("message", reply.get("text", "")) if isinstance(reply, dict) else ""
            if not str(text).startswith("hello"):
                sys.exit(f"{name} answered {response.status_code}: {response.text[:300]}")


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    redis_server, wrk = require_tools()
    redis_port, hipchat_port = free_port(), free_port()
    targets = (*TARGETS, C3) if args.floor_c3 else TARGETS
    ports = {name: free_port() for name in targets}
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    hipchat = FakeHipChat(base_url=f"http://127.0.0.1:{hipchat_port}")
    base_env = {**os.environ, "PYTHONPATH": str(REPO)}

    def addon_env(name: str, store_url: str) -> dict[str, str]:
        return {
            **base_env,
            "ADDON_BASE_URL": f"http://127.0.0.1:{ports[name]}",
            "ADDON_STORE_URL": store_url,
            "ADDON_HIPCHAT_HOSTS": f"127.0.0.1:{hipchat_port}",
            "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
            "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
            "ADDON_LOG_LEVEL": "WARNING",
            # As `hipchat-addon serve --workers N` does: metrics summed over the workers.
            **(
                {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(name))}
                if args.addon_workers > 1
                else {}
            ),
        }

    def metrics_dir(name: str) -> Path:
        path = workdir / f"metrics-{name}"
        path.mkdir(exist_ok=True)
        return path

    redis_command = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    n = args.installations
    n_sqlite = args.sqlite_installations if args.sqlite_installations is not None else n
    result: dict[str, Any] = {}
    import_time = await asyncio.to_thread(import_ms)  # before any server runs beside it

    with contextlib.ExitStack() as stack:
        stack.enter_context(started(redis_command, redis_port, workdir, "redis"))
        addons = {
            "addon": redis_url,
            "addon-sqlite": f"sqlite:///{workdir / 'addon.db'}",
        }
        processes = {
            name: stack.enter_context(
                started(
                    # SQLite is for one process: `serve` refuses several workers on it.
                    addon_command(
                        ports[name], workers=1 if "sqlite" in name else args.addon_workers
                    ),
                    ports[name],
                    workdir,
                    name,
                    addon_env(name, store),
                )
            )
            for name, store in addons.items()
        }
        store = redis.asyncio.Redis.from_url(redis_url)
        async with served(hipchat.app, hipchat_port), store:
            memory_before = int((await store.info("memory"))["used_memory"])
            keys_before = int(await store.dbsize())
            installed, install_seconds = await install_many(
                hipchat, f"http://127.0.0.1:{ports['addon']}", n, args.install_parallel
            )
            memory_after = int((await store.info("memory"))["used_memory"])
            keys_after = int(await store.dbsize())
            key_bytes = 0
            async for key in store.scan_iter(count=1000):
                key_bytes += int(await store.memory_usage(key) or 0)
            installed_sqlite, sqlite_seconds = await install_many(
                hipchat,
                f"http://127.0.0.1:{ports['addon-sqlite']}",
                n_sqlite,
                args.install_parallel,
            )
            rss_after_installs = rss_mib(processes["addon"].pid)
            tokens_after_installs = len(hipchat.token_requests())

            path = await echo_webhook_path(hipchat, f"http://127.0.0.1:{ports['addon']}")

            secrets = {i.oauth_id: i.oauth_secret for i in installed}
            (workdir / "secrets.json").write_text(json.dumps(secrets))
            await store.mset({f"bench:secret:{k}": v for k, v in secrets.items()})
            floor_env = {
                **base_env,
                "BENCH_SECRETS": str(workdir / "secrets.json"),
                "BENCH_REDIS_URL": redis_url,
                "BENCH_SLACK_SECRET": SLACK_SECRET,
            }
            for name in ("floor-a", "floor-b", "floor-c", C3):
                if name not in targets:
                    continue
                command = uvicorn_command("floors:create", ports[name], "--app-dir", str(BENCH))
                env = {**floor_env, "BENCH_FLOOR": name.removeprefix("floor-")}
                processes[name] = stack.enter_context(
                    started(command, ports[name], workdir, name, env)
                )
            for name in BOLT_TARGETS:
                command = uvicorn_command("bolt_app:create", ports[name], "--app-dir", str(BENCH))
                env = {**floor_env, "BENCH_BOLT_PBR": "1" if name == "bolt-pbr" else "0"}
                processes[name] = stack.enter_context(
                    started(command, ports[name], workdir, name, env)
                )
            stacks = {name: server_stack(process.pid) for name, process in processes.items()}

            files = {name: workdir / f"{name}.requests" for name in targets}
            hipchat_file = hipchat_requests(path, hipchat, installed)
            for name in targets:
                files[name].write_text(hipchat_file)
            one_time = {"addon": installed, "addon-sqlite": installed_sqlite}
            for name, group in one_time.items():
                files[name].write_text(hipchat_requests(path, hipchat, group, one_time=True))
            tokens = {name: workdir / f"{name}.tokens" for name in FRESH_JWT_TARGETS}
            urls = {name: f"http://127.0.0.1:{ports[name]}{path}" for name in targets}
            for name in BOLT_TARGETS:
                files[name].write_text(slack_requests(n, "check"))
                urls[name] = f"http://127.0.0.1:{ports[name]}/slack/events"
            await check_replies(urls, files, {k: v[0] for k, v in one_time.items()})

            def drive(name: str, seconds: float, nonce: str, load: Load) -> None:
                if name in BOLT_TARGETS:  # fresh timestamps: Bolt refuses them past 5 minutes
                    files[name].write_text(slack_requests(n, nonce))
                if name in tokens:  # a fresh pool: each JWT is accepted once
                    pool = max(1, round(seconds)) * POOL_RATE
                    tokens[name].write_text(jwt_pool(one_time[name], pool))
                report = run_wrk(
                    wrk,
                    urls[name],
                    files[name],
                    nonce,
                    concurrency=args.concurrency,
                    seconds=seconds,
                    tokens_file=tokens.get(name),
                )
                load.add(report)

            loads = {name: Load() for name in targets}
            for name in targets:  # warm-up, not counted
                await asyncio.to_thread(drive, name, args.warmup, f"w{name}", Load())
            server_cpu = dict.fromkeys(targets, 0.0)
            round_trips: dict[str, dict[str, Any]] = {}
            cpu_before, wall = children_cpu(), 0.0
            for round_index in range(args.rounds):
                order = targets if round_index % 2 == 0 else targets[::-1]
                for name in order:
                    pid = processes[name].pid
                    # floor-c makes one GET per webhook: its count checks the method.
                    counted = round_index == 0 and name in ROUND_TRIP_TARGETS
                    counters = await redis_counters(store) if counted else {}
                    requests_before = loads[name].requests
                    began, cpu_began = time.perf_counter(), tree_cpu_seconds(pid)
                    nonce = f"r{round_index}{name}"
                    await asyncio.to_thread(drive, name, args.seconds, nonce, loads[name])
                    server_cpu[name] += tree_cpu_seconds(pid) - cpu_began
                    wall += time.perf_counter() - began
                    if counted:
                        requests = loads[name].requests - requests_before
                        after = await redis_counters(store)
                        round_trips[name] = store_round_trips(counters, after, requests)
            wrk_cpu = children_cpu() - cpu_before
            sequential = {
                name: await one_at_a_time(store, urls[name], hipchat, installed)
                for name in ROUND_TRIP_TARGETS
            }
            profiles = {}
            for name in args.profile:  # after the measured rounds, so they are not disturbed
                profiles[name] = await asyncio.to_thread(
                    profile, name, processes[name].pid, args.seconds, drive
                )
            rss_after = {name: rss_mib(process.pid) for name, process in processes.items()}
            tokens_total = len(hipchat.token_requests())

    summaries = {name: load.summary() for name, load in loads.items()}
    for name, summary in summaries.items():
        summary["server_cpu_seconds"] = round(server_cpu[name], 2)
        requests = loads[name].requests
        per_request = 1000 * server_cpu[name] / requests if requests else None
        summary["cpu_ms_per_request"] = round(per_request, 4) if per_request else None
        summary["stack"] = stacks[name]
    addon, floor_c, bolt = summaries["addon"], summaries["floor-c"], summaries["bolt"]
    bolt_pbr = summaries["bolt-pbr"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    def at_most(value: float | None, bound: float) -> bool:
        return value is not None and value <= bound

    def at_least(value: float | None, bound: float) -> bool:
        return value is not None and value >= bound

    rate_vs_c = ratio(addon["requests_per_s"], floor_c["requests_per_s"])
    p99_vs_c = ratio(addon["p99_ms"], floor_c["p99_ms"])
    rate_vs_bolt = ratio(addon["requests_per_s"], bolt["requests_per_s"])
    rate_vs_bolt_pbr = ratio(addon["requests_per_s"], bolt_pbr["requests_per_s"])
    cpu_vs_c = ratio(addon["cpu_ms_per_request"], floor_c["cpu_ms_per_request"])
    trips = sequential["addon"]["round_trips_per_webhook"]
    installations_total = n + n_sqlite
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "parameters": {
            "installations": n,
            "sqlite_installations": n_sqlite,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "warmup_seconds": args.warmup,
            "generator": "wrk -t1 (bench/wrk/requests.lua)",
        },
        "targets": summaries,
        "ratios": {
            "addon_to_floor_c_requests_per_s": rate_vs_c,
            "addon_to_floor_c_p99": p99_vs_c,
            "addon_to_bolt_requests_per_s": rate_vs_bolt,
            "addon_to_bolt_pbr_requests_per_s": rate_vs_bolt_pbr,
            "addon_to_floor_c_cpu_per_request": cpu_vs_c,
            "addon_sqlite_to_addon_requests_per_s": ratio(
                summaries["addon-sqlite"]["requests_per_s"], addon["requests_per_s"]
            ),
        },
        "targets_met": {
            "rate_vs_floor_c": at_least(rate_vs_c, MIN_RATE_VS_FLOOR_C),
            "p99_vs_floor_c": at_most(p99_vs_c, MAX_P99_VS_FLOOR_C),
            "rate_vs_bolt": at_least(rate_vs_bolt, MIN_RATE_VS_BOLT),
            "rate_vs_bolt_pbr": at_least(rate_vs_bolt_pbr, MIN_RATE_VS_BOLT_PBR),
            "cpu_per_request_vs_floor_c": at_most(cpu_vs_c, MAX_CPU_VS_FLOOR_C),
            "store_round_trips_per_webhook": trips is not None
            and abs(trips - ROUND_TRIPS_PER_WEBHOOK) <= ROUND_TRIPS_TOLERANCE,
            "import_time": at_most(import_time["median_ms"], MAX_IMPORT_MS),
            "one_token_per_installation": tokens_total == installations_total,
            "same_stack_everywhere": all(all(s.values()) for s in stacks.values()),
        },
        "store_round_trips": sequential["addon"],
        "store_round_trips_floor_c": sequential["floor-c"],
        "store_reads_under_load": round_trips["addon"],
        "store_reads_under_load_floor_c": round_trips["floor-c"],
        "import_addon_app": import_time,
        "installs": {
            "redis": {"count": n, "seconds": round(install_seconds, 3)},
            "sqlite": {"count": n_sqlite, "seconds": round(sqlite_seconds, 3)},
            "redis_installs_per_s": round(n / install_seconds, 1),
            "sqlite_installs_per_s": round(n_sqlite / sqlite_seconds, 1),
            "parallel": args.install_parallel,
        },
        "token_requests": {
            "total": tokens_total,
            "installations": installations_total,
            "per_installation": round(tokens_total / installations_total, 3),
            "during_load": tokens_total - tokens_after_installs,
        },
        "redis": {
            "bytes_per_installation": round((memory_after - memory_before) / n, 1),
            "keys_per_installation": round((keys_after - keys_before) / n, 2),
            "memory_usage_bytes_per_installation": round(key_bytes / n, 1),
        },
        "rss_mib": {"addon_after_installs": rss_after_installs, "after_run": rss_after},
        "profiles": profiles,
        "generator": {
            "wrk_cpu_seconds": round(wrk_cpu, 2),
            "wall_seconds": round(wall, 2),
            "wrk_cpu_share_of_one_core": round(wrk_cpu / wall, 3) if wall else None,
        },
    }
    return result


# -- outputs -----------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    p, ratios, met = result["parameters"], result["ratios"], result["targets_met"]

    def yes(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = [
        f"Run {result['when']} on {result['machine']['cpus']} CPUs, Python "
        f"{result['machine']['python']}; wrk -t1 -c{p['concurrency']}, {p['rounds']} alternating "
        f"rounds x {p['seconds_per_round']} s per target; {p['installations']} installations "
        f"(Redis), {p['sqlite_installations']} (SQLite). Every server on uvloop + httptools: "
        f"{'yes' if met['same_stack_everywhere'] else '**no**'}.",
        "",
        "| target | req/s | p50 ms | p99 ms | CPU ms/req | errors | RSS after (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["targets"].items():
        errors = sum(row["errors"].values())
        rss = result["rss_mib"]["after_run"].get(name)
        lines.append(
            f"| {name} | {row['requests_per_s']:.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['cpu_ms_per_request']} | {errors} | {rss} |"
        )
    tokens, installs = result["token_requests"], result["installs"]
    trips, imported = result["store_round_trips"], result["import_addon_app"]
    floor_trips = result["store_round_trips_floor_c"]["round_trips_per_webhook"]
    commands = ", ".join(f"{k} {v}" for k, v in trips.get("commands", {}).items())
    loaded = result["store_reads_under_load"]
    loaded_commands = ", ".join(f"{k} {v}" for k, v in loaded.get("commands", {}).items())
    lines += [
        "",
        "| measure | value | target | |",
        "|---|---:|---:|---|",
        f"| add-on / floor(c), req/s | {ratios['addon_to_floor_c_requests_per_s']} | "
        f"≥ {MIN_RATE_VS_FLOOR_C} | {yes(met['rate_vs_floor_c'])} |",
        f"| add-on / floor(c), p99 | {ratios['addon_to_floor_c_p99']} | "
        f"≤ {MAX_P99_VS_FLOOR_C} | {yes(met['p99_vs_floor_c'])} |",
        f"| add-on / Bolt, req/s | {ratios['addon_to_bolt_requests_per_s']} | "
        f"≥ {MIN_RATE_VS_BOLT} | {yes(met['rate_vs_bolt'])} |",
        f"| add-on / Bolt (process_before_response), req/s | "
        f"{ratios['addon_to_bolt_pbr_requests_per_s']} | ≥ {MIN_RATE_VS_BOLT_PBR} (aim) | "
        f"{yes(met['rate_vs_bolt_pbr'])} |",
        f"| add-on / floor(c), server CPU per request | "
        f"{ratios['addon_to_floor_c_cpu_per_request']} | ≤ {MAX_CPU_VS_FLOOR_C} | "
        f"{yes(met['cpu_per_request_vs_floor_c'])} |",
        f"| store round trips per webhook (Redis reads, {trips['requests']} webhooks sent one "
        f"at a time; commands: {commands or 'none'}; floor(c), one GET: {floor_trips}) | "
        f"{trips['round_trips_per_webhook']} | {ROUND_TRIPS_PER_WEBHOOK} | "
        f"{yes(met['store_round_trips_per_webhook'])} |",
        f"| Redis reads per webhook under load (one add-on round; concurrent webhooks share "
        f"reads; commands: {loaded_commands or 'none'}) | "
        f"{loaded['round_trips_per_webhook']} | | |",
        f"| `import addon.app`, ms (median of {len(imported['runs_ms'])}, bytecode compiled; "
        f"min {imported['min_ms']}) | "
        f"{imported['median_ms']} | ≤ {MAX_IMPORT_MS:.0f} | "
        f"{yes(met['import_time'])} |",
        f"| token requests per installation (whole run) | {tokens['per_installation']} "
        f"({tokens['total']} / {tokens['installations']}, {tokens['during_load']} under load) "
        f"| 1 | {yes(met['one_token_per_installation'])} |",
        f"| add-on (SQLite) / add-on (Redis), req/s | "
        f"{ratios['addon_sqlite_to_addon_requests_per_s']} | | |",
        f"| installs/s, full flow (Redis / SQLite) | {installs['redis_installs_per_s']} / "
        f"{installs['sqlite_installs_per_s']} | | |",
        f"| Redis bytes per installation: used_memory delta / MEMORY USAGE of keys | "
        f"{result['redis']['bytes_per_installation']:.0f} / "
        f"{result['redis']['memory_usage_bytes_per_installation']:.0f} "
        f"({result['redis']['keys_per_installation']} keys) | | |",
        f"| add-on RSS after installs / after run (MiB) | "
        f"{result['rss_mib']['addon_after_installs']} / "
        f"{result['rss_mib']['after_run'].get('addon')} | | |",
        f"| wrk CPU, share of one core | {result['generator']['wrk_cpu_share_of_one_core']} | | |",
    ]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["targets"])
    rates = [result["targets"][n]["requests_per_s"] for n in names]
    p50s = [result["targets"][n]["p50_ms"] for n in names]
    p99s = [result["targets"][n]["p99_ms"] for n in names]
    colours = ["tab:red" if n.startswith("addon") else "tab:grey" for n in names]
    for name in BOLT_TARGETS:
        colours[names.index(name)] = "tab:purple"
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    bars = left.bar(names, rates, color=colours)
    left.bar_label(bars, fmt="%.0f")
    floor_c = result["targets"]["floor-c"]["requests_per_s"]
    left.axhline(
        floor_c * MIN_RATE_VS_FLOOR_C,
        color="tab:green",
        linestyle="--",
        linewidth=1,
        label=f"target: {MIN_RATE_VS_FLOOR_C} x floor-c",
    )
    left.set_ylim(0, max(rates) * 1.12)  # room for the bar labels
    left.legend(loc="upper right")
    left.set_title("requests/s (higher is better)")
    left.tick_params(axis="x", rotation=20)
    bars = right.bar(names, p99s, color=colours, label="p99")
    right.bar_label(bars, fmt="%.1f")
    right.scatter(names, p50s, color="black", marker="_", s=400, label="p50", zorder=3)
    p99_c = result["targets"]["floor-c"]["p99_ms"]
    right.axhline(
        p99_c * MAX_P99_VS_FLOOR_C,
        color="tab:green",
        linestyle="--",
        linewidth=1,
        label=f"target: {MAX_P99_VS_FLOOR_C} x floor-c p99",
    )
    right.set_ylim(0, max([*p99s, p99_c * MAX_P99_VS_FLOOR_C]) * 1.35)  # labels, legend above
    right.set_title("latency ms: bars p99, ticks p50 (lower is better)")
    right.tick_params(axis="x", rotation=20)
    right.legend(loc="upper left", ncol=3)
    p = result["parameters"]
    figure.suptitle(
        f"/echo webhook, loopback, uvicorn 1 worker (uvloop, httptools), wrk -c{p['concurrency']}, "
        f"{p['rounds']} x {p['seconds_per_round']} s rounds ({result['when']})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installations", type=int, default=1000)
    parser.add_argument(
        "--sqlite-installations", type=int, default=None, help="default: --installations"
    )
    parser.add_argument("--install-parallel", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5, help="per target per round (whole s)")
    parser.add_argument("--warmup", type=int, default=1, help="per target, not counted (s)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--addon-workers", type=int, default=1, help="add-on worker processes (serve --workers N)"
    )
    parser.add_argument(
        "--floor-c3",
        action="store_true",
        help="diagnostic: also drive floor-c + 1 more GET + 1 SET NX (the add-on's round trips)",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        choices=(*TARGETS, C3),
        help="after the rounds, py-spy this target for --seconds under the same load",
    )
    args = parser.parse_args(argv)
    require_tools()
    with tempfile.TemporaryDirectory(prefix="addon-bench-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.output.with_suffix(".md").write_text(table)
    chart(result, args.output.with_suffix(".png"))
    print(table)
    print(f"written to {args.output} (.md, .png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
