"""The soak: mixed traffic through nginx in front of three replicas while parts of the system fail.

``bench/soak --seconds 300`` (see bench/README.md, *Soak*). Loopback only; it starts and stops
everything itself: a durable private Redis (AOF, fsync always), three ``hipchat-addon serve``
replicas, Debian's nginx with ``deploy/nginx/addon.conf.template``, and a FakeHipChat on a socket
issuing short-lived tokens. Traffic: installs, ``/tally`` commands (some delivered twice, with one
message id, to two replicas' ports at once), ``/counter`` (a seed script whose storage counts),
uninstalls; token expiries force refreshes. Faults, each in its own window: a replica SIGKILLed
and restarted, a replica SIGTERMed (it drains) and restarted, Redis stopped and restarted, the
token endpoint answering 500 and then 429.

Statuses: 2xx is *ok*. *Retryable* (HipChat retries, or the room sees nothing) is 502 or 504, a
503 carrying ``Retry-After``, or a transport error (refused or reset connection, timeout): what a
dead replica, a draining one, the store being down or the token endpoint failing may answer.
Anything else (500, another 5xx, a 503 without ``Retry-After``, an unexpected 4xx) is a
*failure*. The verdict passes when there is no failure and every check in ``checks`` holds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from addon.seed import LOCK_MARGIN
from addon.testing import FakeHipChat, FakeHipChatError, Installed
from bench.cluster_kit import (
    find_nginx,
    free_port,
    serve_fake,
    start_nginx,
    start_redis,
    start_replica,
    stop,
    wait_ready,
)

REPLICAS = 3
COMMAND_TIMEOUT = 10.0  # ADDON_COMMAND_TIMEOUT of the replicas (the default is 30)
CLIENT_TIMEOUT = 20.0
# A storage lock whose holder was killed, or whose release found Redis down, is held until its
# TTL (the command timeout plus the seed's margin): until then the room's /counter waits for
# it and times out. Documented; a fault's effect, however short the fault's window.
LOCK_HELD = COMMAND_TIMEOUT + LOCK_MARGIN
TOKEN_CACHE_FRACTION = 0.5  # the add-on keeps a token for at least half its lifetime

# Each run appends "<pid> <message id>" to a file per replica: how many times each command ran.
TALLY = """
    import os

    from addon import Integration, RoomMessage

    integration = Integration(key="tally")


    @integration.command("tally")
    def tally(message: RoomMessage) -> str:
        path = os.path.join(os.environ["SOAK_RUNS"], f"{os.getpid()}.txt")
        with open(path, "a") as file:
            file.write(f"{os.getpid()} {message.args}\\n")
        return f"tallied {message.args}"
"""

# A seed script (six arguments: it gets the installation's token, so tokens are fetched and
# refreshed) whose storage counts. "/counter get <id>" reads without counting.
COUNTER = """
    import os


    def run_integration(notification, query, all_tokens, token, storage, log):
        if query.startswith("get "):
            return "value " + str(storage.get("n", 0))
        if not token:
            raise RuntimeError("no token")
        storage["n"] = storage.get("n", 0) + 1
        path = os.path.join(os.environ["SOAK_RUNS"], f"{os.getpid()}.txt")
        with open(path, "a") as file:
            file.write(f"{os.getpid()} {query}\\n")
        return "count " + str(storage["n"])
"""


@dataclasses.dataclass(frozen=True)
class Window:
    """A fault window, as fractions of the run: the fault starts at ``start``, is repaired at
    ``repair`` and the window (its recovery included) ends at ``end``."""

    name: str
    start: float
    repair: float
    end: float
    orphans_locks: bool = False  # storage locks taken before the fault may outlive the window


WINDOWS = (
    Window("replica-sigkill", 0.12, 0.17, 0.26, orphans_locks=True),
    Window("replica-sigterm", 0.30, 0.35, 0.44),
    Window("redis-down", 0.48, 0.54, 0.63, orphans_locks=True),
    Window("token-500", 0.67, 0.74, 0.77),
    Window("token-429", 0.77, 0.84, 0.88),
)


@dataclasses.dataclass
class Sample:
    at: float  # seconds since the start
    latency: float
    kind: str
    status: int  # 0: transport error
    outcome: str  # ok | declined | retryable | failure
    message_id: str = ""


@dataclasses.dataclass
class Room:
    installed: Installed
    installed_at: float
    uninstalled_at: float | None = None
    busy: int = 0
    counters_sent: int = 0


def classify(response: httpx.Response | None) -> str:
    if response is None:
        return "retryable"
    status = response.status_code
    if 200 <= status < 300:
        # The add-on tells the room when a command failed ("/x failed: ...; try again shortly").
        return "declined" if " failed: " in _reply(response) else "ok"
    if status in (502, 504) or (status == 503 and "retry-after" in response.headers):
        return "retryable"
    return "failure"


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path, hipchat: FakeHipChat) -> None:
        self.args = args
        self.workdir = workdir
        self.hipchat = hipchat
        self.random = random.Random(args.seed)
        self.proxy_port = free_port()
        self.ports = [free_port() for _ in range(REPLICAS)]
        self.redis_port = free_port()
        self.url = f"http://127.0.0.1:{self.proxy_port}"
        self.store_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.runs_dir = workdir / "runs"
        self.replicas: list[subprocess.Popen[bytes]] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None
        self.samples: list[Sample] = []
        self.attempts: dict[str, list[str]] = {}  # message id -> outcomes
        self.replied: set[str] = set()  # message ids whose 2xx carried the command's reply
        self.accepted_at: dict[str, float] = {}  # message ids only accepted (204), and when sent
        self.rooms: list[Room] = []
        self.uninstalled: list[Room] = []
        self.unsure_rooms: list[Room] = []
        self.events: list[dict[str, Any]] = []
        self.started = self.wall_started = 0.0
        self.counter = 0
        self.next_room = 1
        self.clients: dict[int, httpx.AsyncClient] = {}
        self.marks: list[tuple[str, int]] = []  # (phase, index of its first call at the fake)

    # -- processes --------------------------------------------------------------------------

    def start_processes(self) -> None:
        (self.workdir / "integrations").mkdir()
        (self.workdir / "integrations" / "tally.py").write_text(textwrap.dedent(TALLY))
        (self.workdir / "integrations" / "counter.py").write_text(textwrap.dedent(COUNTER))
        self.runs_dir.mkdir()
        redis_server = shutil.which("redis-server")
        nginx = find_nginx()
        if redis_server is None or nginx is None:
            raise SystemExit("the soak needs redis-server and nginx (apt-get install ...)")
        self.redis_server = redis_server
        self.redis = start_redis(
            redis_server, self.workdir / "redis", self.redis_port, durable=True
        )
        self.replicas = [self.start_replica(port) for port in self.ports]
        self.nginx = start_nginx(nginx, self.workdir, self.proxy_port, self.ports)

    def start_replica(self, port: int) -> subprocess.Popen[bytes]:
        env = {"SOAK_RUNS": str(self.runs_dir), "ADDON_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT)}
        log = self.workdir / f"replica-{port}.log"
        return start_replica(self.workdir, self.hipchat, port, self.url, self.store_url, env, log)

    async def wait_all_ready(self) -> None:
        for port in self.ports:
            await wait_ready(f"http://127.0.0.1:{port}", self.replicas, within=60)
        assert self.nginx is not None
        await wait_ready(self.url, [self.nginx], within=60)

    def stop_processes(self) -> None:
        for process in [*self.replicas, self.nginx, self.redis]:
            if process is not None:
                stop(process)

    # -- traffic ----------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.started

    def client(self, port: int) -> httpx.AsyncClient:
        """A client whose requests to the public URL go to ``port`` (a replica, or nginx)."""
        if port not in self.clients:
            transport = _Redirect(port)
            self.clients[port] = httpx.AsyncClient(
                base_url=self.url, transport=transport, timeout=CLIENT_TIMEOUT
            )
        return self.clients[port]

    async def timed(
        self, kind: str, call: Callable[[], Awaitable[httpx.Response | None]], message_id: str = ""
    ) -> tuple[str, httpx.Response | None]:
        started = self.now()
        response: httpx.Response | None
        try:
            response = await call()
        except FakeHipChatError as error:
            response = error.response
        except httpx.TransportError:
            response = None
        outcome = classify(response)
        status = response.status_code if response is not None else 0
        latency = self.now() - started
        self.samples.append(Sample(started, latency, kind, status, outcome, message_id))
        return outcome, response

    async def install(self) -> None:
        room_id = self.next_room
        self.next_room += 1
        result: list[Installed] = []

        async def call() -> httpx.Response | None:
            installed = await self.hipchat.install(self.client(self.proxy_port), room_id=room_id)
            result.append(installed)
            return installed.response

        outcome, _ = await self.timed("install", call)
        if outcome == "ok" and result:
            self.rooms.append(Room(result[0], self.now()))

    async def uninstall(self) -> None:
        idle = [room for room in self.rooms if room.busy == 0]
        if len(idle) <= self.args.installations // 2:
            return
        room = self.random.choice(idle)
        self.rooms.remove(room)
        outcome, _ = await self.timed(
            "uninstall",
            lambda: self.hipchat.uninstall(self.client(self.proxy_port), room.installed),
        )
        room.uninstalled_at = self.now()
        (self.uninstalled if outcome == "ok" else self.unsure_rooms).append(room)

    def message_id(self) -> str:
        self.counter += 1
        return f"m{self.counter}"

    async def send(
        self, room: Room, port: int, text: str, message_id: str
    ) -> httpx.Response | None:
        installed = dataclasses.replace(room.installed, addon=self.client(port))
        return await self.hipchat.send_message(installed, text, message_id=message_id)

    def sender(
        self, room: Room, port: int, text: str, message_id: str
    ) -> Callable[[], Awaitable[httpx.Response | None]]:
        return lambda: self.send(room, port, text, message_id)

    async def command(self, name: str, duplicate: bool) -> None:
        if not self.rooms:
            return
        room = self.random.choice(self.rooms)
        message_id = self.message_id()
        text = f"/{name} {message_id}"
        ports = self.random.sample(self.ports, 2) if duplicate else [self.proxy_port]
        kind = f"{name}-duplicate" if duplicate else name
        sent_at = self.now()
        room.busy += 1
        try:
            results = await asyncio.gather(
                *(
                    self.timed(kind, self.sender(room, port, text, message_id), message_id)
                    for port in ports
                )
            )
        finally:
            room.busy -= 1
        self.attempts[message_id] = [outcome for outcome, _ in results]
        if any(o == "ok" and r is not None and _reply(r) for o, r in results):
            self.replied.add(message_id)
        elif set(self.attempts[message_id]) == {"ok"}:
            # When it was sent: a command sent in a fault window is answered (empty) only when
            # the reply window closes, which can be after the fault window has ended.
            self.accepted_at[message_id] = sent_at
        if name == "counter":
            room.counters_sent += 1

    async def worker(self, deadline: float) -> None:
        while self.now() < deadline:
            draw = self.random.random()
            if draw < 0.03:
                await self.install()
            elif draw < 0.05:
                await self.uninstall()
            elif draw < 0.35:
                await self.command("counter", duplicate=False)
            elif draw < 0.50:
                await self.command("tally", duplicate=True)
            else:
                await self.command("tally", duplicate=False)

    # -- faults -----------------------------------------------------------------------------

    async def at(self, fraction: float) -> None:
        await asyncio.sleep(max(0.0, fraction * self.args.seconds - self.now()))

    def event(self, what: str) -> None:
        self.events.append({"at": round(self.now(), 3), "event": what})
        print(f"[soak {self.now():7.1f} s] {what}", file=sys.stderr, flush=True)

    async def restart_replica(self, index: int) -> None:
        self.replicas[index] = self.start_replica(self.ports[index])
        await wait_ready(f"http://127.0.0.1:{self.ports[index]}", [self.replicas[index]], 60)
        self.event(f"replica {index} ready again")

    async def faults(self) -> None:
        kill, term, store, t500, t429 = WINDOWS
        await self.at(kill.start)
        self.event("SIGKILL replica 0")
        self.replicas[0].kill()
        self.replicas[0].wait()
        await self.at(kill.repair)
        self.event("restart replica 0")
        await self.restart_replica(0)

        await self.at(term.start)
        self.event("SIGTERM replica 1 (drains)")
        self.replicas[1].send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.replicas[1].wait, 30)
        self.event(f"replica 1 exited with {self.replicas[1].returncode}")
        await self.at(term.repair)
        self.event("restart replica 1")
        await self.restart_replica(1)

        await self.at(store.start)
        self.event("stop Redis")
        assert self.redis is not None
        await asyncio.to_thread(stop, self.redis, 30)
        await self.at(store.repair)
        self.event("restart Redis")
        self.redis = await asyncio.to_thread(
            start_redis, self.redis_server, self.workdir / "redis", self.redis_port, durable=True
        )

        await self.at(t500.start)
        self.event("token endpoint answers 500")
        self.hipchat.token_outage = 500
        await self.at(t500.repair)
        self.hipchat.token_outage = None
        self.event("token endpoint answers again")
        await self.at(t429.start)
        self.event("token endpoint answers 429")
        self.hipchat.token_outage = 429
        await self.at(t429.repair)
        self.hipchat.token_outage = None
        self.event("token endpoint answers again")

    async def mark_phases(self) -> None:
        """Note where each phase starts in the fake's call log (to count token requests)."""
        for phase in self.phases()[1:]:
            await asyncio.sleep(max(0.0, phase["start"] - self.now()))
            self.marks.append((phase["name"], len(self.hipchat.calls)))

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        await self.wait_all_ready()
        self.started, self.wall_started = time.monotonic(), time.time()
        self.marks.append(("steady-0", len(self.hipchat.calls)))
        for _ in range(self.args.installations):
            await self.install()
        deadline = float(self.args.seconds)
        workers = [self.worker(deadline) for _ in range(self.args.concurrency)]
        await asyncio.wait_for(
            asyncio.gather(self.mark_phases(), self.faults(), *workers),
            timeout=self.args.seconds + 120,
        )
        self.event("traffic stopped; reading everything back")
        await self.wait_all_ready()
        checks = await self.verify()
        for client in self.clients.values():
            await client.aclose()
        return self.report(checks)

    # -- verification -----------------------------------------------------------------------

    async def read_counter(self, room: Room) -> tuple[int, int | None]:
        """The status and counter of ``room``, read through nginx (retrying retryable errors)."""
        for _ in range(10):
            try:
                response = await self.send(
                    room, self.proxy_port, f"/counter get {self.message_id()}", self.message_id()
                )
            except (FakeHipChatError, httpx.TransportError):
                await asyncio.sleep(1)
                continue
            if response is None:
                return 0, None
            reply = _reply(response)
            if classify(response) == "ok" and reply.startswith("value "):
                return 200, int(reply.removeprefix("value "))
            if classify(response) == "failure":
                return response.status_code, None
            # Retryable, declined, or answered late (the reply then goes to the room): again.
            await asyncio.sleep(1)
        return 0, None

    def runs(self) -> Counter[str]:
        runs: Counter[str] = Counter()
        for path in self.runs_dir.glob("*.txt"):
            runs.update(line.split(" ", 1)[1] for line in path.read_text().splitlines())
        return runs

    async def settle(self) -> Counter[str]:
        """The run log once no command has run for 2 s (commands stuck behind a lock of a killed
        replica may still finish after their sender gave up), at most 60 s."""
        runs, quiet_since, deadline = self.runs(), time.monotonic(), time.monotonic() + 60
        while time.monotonic() - quiet_since < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = self.runs()
            if now != runs:
                runs, quiet_since = now, time.monotonic()
        return runs

    def in_fault(self, at: float) -> bool:
        """Whether a command accepted at ``at`` may have run (in the background, past the
        reply window) while a fault was on: from a command timeout before a window to its end,
        or, for a fault that can orphan a storage lock, until that lock's TTL has run out."""
        seconds = float(self.args.seconds)

        def end(w: Window) -> float:
            held = w.start * seconds + LOCK_HELD if w.orphans_locks else 0.0
            return max(w.end * seconds, held)

        return any(w.start * seconds - COMMAND_TIMEOUT <= at <= end(w) for w in WINDOWS)

    def describe(self, message_ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(message_ids)
        return [
            dataclasses.asdict(s) | {"phase": _phase_at(self.phases(), s.at)}
            for s in self.samples
            if s.message_id in wanted
        ]

    def acknowledged(self, room: Room) -> list[int]:
        """The counter values the room was told ("count N"): each an acknowledged write."""
        texts = self.hipchat.notifications(room.installed.room)
        return [int(t.split()[1]) for t in texts if t.startswith("count ")]

    async def verify(self) -> dict[str, Any]:
        runs = await self.settle()
        twice = sorted(m for m, n in runs.items() if n > 1)
        lost_commands = sorted(m for m in self.replied if runs[m] != 1)
        accepted_lost = sorted(m for m in self.accepted_at if runs[m] == 0)
        accepted_lost_outside = [m for m in accepted_lost if not self.in_fault(self.accepted_at[m])]
        lost_rooms, lost_writes, phantom_writes, told_twice = [], [], [], []
        for room in self.rooms:
            status, value = await self.read_counter(room)
            if status != 200 or value is None:
                lost_rooms.append(room.installed.oauth_id)
                continue
            acked = self.acknowledged(room)
            row = {"room": room.installed.room, "acked": len(acked), "read": value}
            if acked and value < max(acked):
                lost_writes.append(row)
            if value > room.counters_sent:
                phantom_writes.append({**row, "sent": room.counters_sent})
            if len(set(acked)) != len(acked):
                told_twice.append(row)
        still_there = []
        for room in self.uninstalled:
            status, _ = await self.read_counter(room)
            if status == 200:
                still_there.append(room.installed.oauth_id)
        tokens = self.token_check()
        return {
            "commands_sent": len(self.attempts),
            "commands_ran_more_than_once": twice,
            "commands_replied": len(self.replied),
            "commands_acknowledged_but_not_run": self.describe(lost_commands),
            "commands_accepted": len(self.accepted_at),
            "commands_accepted_not_run_in_fault_windows": len(accepted_lost),
            "commands_accepted_not_run_outside_faults": self.describe(accepted_lost_outside),
            "installations_checked": len(self.rooms),
            "installations_lost": lost_rooms,
            "counter_writes_lost": lost_writes,
            "counter_writes_unaccounted": phantom_writes,
            "counter_values_told_twice": told_twice,
            "counter_writes_acknowledged": sum(len(self.acknowledged(r)) for r in self.rooms),
            "uninstalled_checked": len(self.uninstalled),
            "uninstalled_still_answering": still_there,
            "tokens": tokens,
        }

    def token_check(self) -> dict[str, Any]:
        """Tokens granted per installation and phase against one per token lifetime (the cache
        keeps a token for half its lifetime: ``ceil(alive / cache) + 1`` per phase); token
        requests (granted or refused) are reported per phase, not bounded."""
        phases = self.phases()
        cache = self.hipchat.token_lifetime * TOKEN_CACHE_FRACTION
        ended = self.now()
        alive: dict[str, tuple[float, float]] = {}
        for room in [*self.rooms, *self.uninstalled, *self.unsure_rooms]:
            until = room.uninstalled_at if room.uninstalled_at is not None else ended
            alive[room.installed.oauth_id] = (room.installed_at, until)
        granted: Counter[tuple[str, str]] = Counter()
        for issued in list(self.hipchat.tokens.values()):
            at = issued.expires_at - self.hipchat.token_lifetime - self.wall_started
            granted[(issued.oauth_id, _phase_at(phases, at))] += 1
        requests: Counter[tuple[str, str]] = Counter()
        bounds = [*self.marks[1:], ("", len(self.hipchat.calls))]
        for (phase, first), (_, after) in zip(self.marks, bounds, strict=True):
            for call in self.hipchat.calls[first:after]:
                if call.path == "/v2/oauth/token":
                    oauth_id = _basic_user(call.headers.get("authorization", ""))
                    requests[(oauth_id, phase)] += 1
        over = []
        for (oauth_id, phase), count in granted.items():
            start, end = next((p["start"], p["end"]) for p in phases if p["name"] == phase)
            born, gone = alive.get(oauth_id, (start, end))
            overlap = max(0.0, min(end, gone) - max(start, born))
            allowed = math.ceil(overlap / cache) + 1
            if count > allowed:
                over.append({"phase": phase, "granted": count, "allowed": allowed})
        per_phase: dict[str, dict[str, int]] = {}
        for row in phases:
            name = row["name"]
            asked = [n for (_, p), n in requests.items() if p == name]
            given = [n for (_, p), n in granted.items() if p == name]
            per_phase[name] = {
                "requests": sum(asked),
                "granted": sum(given),
                "most_requests_by_one_installation": max(asked, default=0),
                "most_granted_to_one_installation": max(given, default=0),
            }
        return {
            "requests": sum(requests.values()),
            "granted": sum(granted.values()),
            "installations": len(alive),
            "token_cache_seconds": cache,
            "per_phase": per_phase,
            "over_budget": over,
        }

    def phases(self) -> list[dict[str, Any]]:
        seconds = float(self.args.seconds)
        edges: list[tuple[float, str]] = [(0.0, "steady-0")]
        for index, window in enumerate(WINDOWS):
            edges.append((window.start * seconds, window.name))
            edges.append((window.end * seconds, f"steady-{index + 1}"))
        phases = []
        for (start, name), (end, _) in zip(edges, [*edges[1:], (math.inf, "")], strict=True):
            if end > start:
                phases.append({"name": name, "start": start, "end": end})
        return phases

    def report(self, checks: dict[str, Any]) -> dict[str, Any]:
        phases = self.phases()
        by_phase: dict[str, list[Sample]] = defaultdict(list)
        for sample in self.samples:
            by_phase[_phase_at(phases, sample.at)].append(sample)
        phase_rows = []
        for phase in phases:
            samples = by_phase[phase["name"]]
            phase_rows.append(
                {
                    "name": phase["name"],
                    "start": round(phase["start"], 2),
                    "end": round(min(phase["end"], self.args.seconds + 0.0), 2),
                    **_summary(samples),
                }
            )
        failures = [dataclasses.asdict(s) for s in self.samples if s.outcome == "failure"]
        verdict = (
            not failures
            and not checks["commands_ran_more_than_once"]
            and not checks["commands_acknowledged_but_not_run"]
            and not checks["commands_accepted_not_run_outside_faults"]
            and not checks["installations_lost"]
            and not checks["counter_writes_lost"]
            and not checks["counter_writes_unaccounted"]
            and not checks["counter_values_told_twice"]
            and not checks["uninstalled_still_answering"]
            and not checks["tokens"]["over_budget"]
        )
        return {
            "verdict": "pass" if verdict else "fail",
            "config": {
                "seconds": self.args.seconds,
                "installations": self.args.installations,
                "concurrency": self.args.concurrency,
                "token_lifetime": self.args.token_lifetime,
                "replicas": REPLICAS,
                "seed": self.args.seed,
            },
            "machine": {"cpus": os.cpu_count(), "loadavg_at_end": list(os.getloadavg())},
            "outcomes": {
                "ok": "2xx",
                "declined": "2xx whose reply tells the room the command failed (try again)",
                "retryable": "502, 504, 503 with Retry-After, transport errors",
                "failure": "anything else: 500, other 5xx, 503 without Retry-After, 4xx",
            },
            "windows": [
                {
                    "name": w.name,
                    "start": w.start * self.args.seconds,
                    "repair": w.repair * self.args.seconds,
                    "end": w.end * self.args.seconds,
                }
                for w in WINDOWS
            ],
            "events": self.events,
            "total": _summary(self.samples),
            "phases": phase_rows,
            "failures": failures[:50],
            "checks": checks,
            "timeline": _timeline(self.samples, self.args.seconds),
        }


class _Redirect(httpx.AsyncBaseTransport):
    """Sends every request to 127.0.0.1:``port``, whatever host its URL names."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=64))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _reply(response: httpx.Response) -> str:
    """The message of a JSON webhook reply, else ""."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def _basic_user(header: str) -> str:
    try:
        return base64.b64decode(header.removeprefix("Basic ")).decode().split(":", 1)[0]
    except ValueError:
        return ""


def _phase_at(phases: list[dict[str, Any]], at: float) -> str:
    for phase in phases:
        if phase["start"] <= at < phase["end"]:
            return str(phase["name"])
    return str(phases[-1]["name"])


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _summary(samples: list[Sample]) -> dict[str, Any]:
    latencies = [s.latency for s in samples]
    statuses = Counter(str(s.status) if s.status else "transport" for s in samples)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return {
        "requests": len(samples),
        "ok": sum(s.outcome == "ok" for s in samples),
        "declined": sum(s.outcome == "declined" for s in samples),
        "retryable": sum(s.outcome == "retryable" for s in samples),
        "failures": sum(s.outcome == "failure" for s in samples),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
    }


def _timeline(samples: list[Sample], seconds: int) -> list[dict[str, Any]]:
    buckets: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        buckets[int(sample.at)].append(sample)
    rows = []
    for second in range(max([seconds, *buckets.keys()]) + 1):
        bucket = buckets.get(second, [])
        p99 = _percentile([s.latency for s in bucket], 0.99)
        rows.append(
            {
                "t": second,
                "requests": len(bucket),
                "retryable": sum(s.outcome in ("retryable", "declined") for s in bucket),
                "failures": sum(s.outcome == "failure" for s in bucket),
                "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
            }
        )
    return rows


def draw(result: dict[str, Any], path: Path) -> bool:
    """The PNG timeline; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timeline = result["timeline"]
    t = [row["t"] for row in timeline]
    figure, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    axes[0].plot(t, [row["requests"] for row in timeline], color="tab:blue")
    axes[0].set_ylabel("requests/s")
    retryable = [row["retryable"] for row in timeline]
    axes[1].bar(t, retryable, color="tab:orange", label="retryable or declined")
    axes[1].bar(t, [row["failures"] for row in timeline], color="tab:red", label="failures")
    axes[1].set_ylabel("errors/s")
    axes[1].legend(loc="upper right", fontsize=8)
    p99 = [row["p99_ms"] if row["p99_ms"] is not None else math.nan for row in timeline]
    axes[2].plot(t, p99, color="tab:purple")
    axes[2].set_ylabel("p99 (ms)")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("seconds")
    for window in result["windows"]:
        for axis in axes:
            axis.axvspan(window["start"], window["end"], color="grey", alpha=0.15)
            axis.axvline(window["repair"], color="grey", linestyle=":", linewidth=0.8)
        axes[0].annotate(
            window["name"],
            (window["start"], 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="bottom",
        )
    total = result["total"]
    figure.suptitle(
        f"soak {result['config']['seconds']} s: {total['requests']} requests, "
        f"{total['retryable']} retryable, {total['failures']} failures, "
        f"verdict {result['verdict']}",
        y=0.995,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="traffic duration (default 300)")
    parser.add_argument("--installations", type=int, default=40, help="installed at the start")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent senders")
    parser.add_argument("--token-lifetime", type=int, default=10, help="expires_in of tokens")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG timeline")
    args = parser.parse_args(argv)
    if args.seconds < 20:
        parser.error("--seconds must be at least 20 (five fault windows need room)")
    return args


def keep_logs(workdir: Path, logs: Path) -> None:
    """Copy the run's logs (replicas, nginx) from ``workdir``, which is removed, to ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, logs / log.name)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        with serve_fake(token_lifetime=args.token_lifetime) as hipchat:
            run = Soak(args, workdir, hipchat)
            try:
                run.start_processes()
                result = await run.run()
            finally:
                run.stop_processes()
        if result["verdict"] != "pass":  # the replicas' logs say why: keep them with the report
            keep_logs(workdir, args.output / "logs")
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = asyncio.run(soak(args))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    drawn = not args.no_png and draw(result, args.output / "soak.png")
    summary = {k: result[k] for k in ("verdict", "total")}
    print(json.dumps({**summary, "png": drawn, "checks": result["checks"]}, indent=1))
    return 0 if result["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
