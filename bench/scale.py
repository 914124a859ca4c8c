"""Throughput against the number of add-on processes (issue 12, item 6), on loopback.

    python bench/scale.py [--installations 200] [--concurrency 32] [--rounds 4] [--seconds 5]

Starts a private redis-server and a FakeHipChat (in this process), then, all at once and all on
that Redis, the set-ups it compares:

- ``w1``: ``hipchat-addon serve --workers 1``;
- ``w2``: ``hipchat-addon serve --workers 2`` (``addon/supervisor.py``: two workers, each on
  its own ``SO_REUSEPORT`` socket; prometheus-client's multi-process mode, as ``serve`` sets it
  up);
- ``r3``: three ``hipchat-addon serve --workers 1`` replicas behind Debian's nginx, configured by
  ``deploy/nginx/addon.conf.template`` (filled as docker-compose's nginx image and
  tests/test_balancer.py fill it);
- ``w1-mp`` (diagnostic): ``w1`` with ``PROMETHEUS_MULTIPROC_DIR`` set, the metrics cost of w2's
  mode in one process;
- ``c1`` and ``c2`` (reference): floor(c) of bench/floors.py under ``uvicorn --workers 1`` and
  ``--workers 2``: what two processes of the least app that does the same work reach here.

It installs the add-on N times through w1 (the installations are in the shared Redis, so every
add-on set-up serves them), then drives each set-up with wrk as bench/run.py does (same request
files, one-time JWT pool, ``-t1 -cC``), in ``--rounds`` rounds, the order reversed every other
round so that set-ups compared with each other run back to back. Around every wrk run it reads
the CPU time (``/proc/<pid>/stat``) of every process involved: the servers (each worker), nginx,
Redis, wrk and this process (the fake HipChat), and the whole machine's (``/proc/stat``), so the
CPU the set-up got, and the CPU others took, are known. In the middle of every run it counts the
established connections each server process holds, and after it the requests each worker served
(``addon_http_requests_total`` from the multi-process files, per pid).

Writes ``bench/results/scale.json`` and prints a table. Needs ``redis-server``, ``wrk`` and
``nginx`` on PATH (``nginx`` in /usr/sbin too). See README.md, *Scaling*.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    REPO,
    RESULTS,
    STACK,
    Load,
    addon_command,
    check_replies,
    children_cpu,
    cpu_seconds,
    echo_webhook_path,
    free_port,
    hipchat_requests,
    install_many,
    jwt_pool,
    require_tools,
    run_wrk,
    served,
    server_stack,
    started,
    uvicorn_command,
)

from addon.testing import FakeHipChat

TEMPLATE = REPO / "deploy" / "nginx" / "addon.conf.template"
REPLICAS = 3
POOL_RATE = 10_000  # one-time JWTs per second of a run, as bench/run.py
SETUPS = ("w1", "w2", "r3", "w1-mp", "c1", "c2", "u1", "u2")
# Diagnostic u1/u2: the add-on as bench/run.py first ran it under N workers (commit 80dcf86),
# plain ``uvicorn --workers N`` on asyncio's loop and h11, without ``serve``'s options.
OLD_STACK = ("--loop", "asyncio", "--http", "h11")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Setup:
    """One set-up under test: its processes (by role), the URL wrk drives, its ports."""

    name: str
    url: str
    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_dir: Path | None = None
    load: Load = field(default_factory=Load)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        """Every process of the set-up and its role: server(s), workers, nginx's."""
        roles: dict[str, int] = {}
        for process in self.processes:
            role = "nginx" if "nginx" in str(process.args) else "server"
            kids = children(process.pid)
            if role == "nginx":
                roles["nginx-master"] = process.pid
                roles.update({f"nginx-worker-{i}": pid for i, pid in enumerate(kids)})
            elif kids:  # a supervisor (serve's, or uvicorn's for c2) and its workers
                roles[f"supervisor-{process.pid}"] = process.pid
                roles.update({f"worker-{pid}": pid for pid in kids})
            else:
                roles[f"server-{process.pid}"] = process.pid
        return roles


def children(pid: int) -> list[int]:
    """``pid``'s child processes, from /proc (``multiprocessing``'s spawn helper left out)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for text in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{text}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                found.append(int(text))
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def connections(port: int) -> set[int]:
    """Socket inodes of established TCP connections whose local port is ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(int(parts[9]))
    return inodes


def connections_by_pid(pids: dict[str, int], ports: list[int]) -> dict[str, int]:
    """How many established connections to ``ports`` each process holds."""
    wanted: set[int] = set()
    for port in ports:
        wanted |= connections(port)
    held = {}
    for role, pid in pids.items():
        count = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and int(link[8:-1]) in wanted:
                        count += 1
        if count:
            held[role] = count
    return held


def requests_by_pid(metrics_dir: Path) -> dict[int, float]:
    """``addon_http_requests_total`` per worker pid, from prometheus-client's files."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "addon_http_requests_total":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def nginx_conf(workdir: Path, port: int, upstreams: list[int]) -> Path:
    """The template filled as tests/test_balancer.py fills it; access log off for the bench."""
    servers = " ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams)
    values = {"ADDON_UPSTREAM_SERVERS": servers, "ADDON_PROXY_PORT": f"127.0.0.1:{port}"}
    text = TEMPLATE.read_text()
    for name, value in values.items():  # what the nginx image's envsubst does, for our names
        text = text.replace(f"${{{name}}}", value)
    if "${ADDON_" in text:
        sys.exit(f"{TEMPLATE} has a placeholder nobody fills")
    (workdir / "addon.conf").write_text(text)
    temp = {name: workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    paths = "\n".join(f"    {name}_temp_path {path};" for name, path in temp.items())
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'nginx-error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    access_log off;\n{paths}\n    include {workdir / 'addon.conf'};\n}}\n"
    )
    return conf


class Sampler:
    """CPU seconds of every process of a run, and of the machine, between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        values = {}
        for role, pid in self.pids.items():
            with contextlib.suppress(OSError):
                values[role] = cpu_seconds(pid)
        values["bench (fake HipChat)"] = cpu_seconds(os.getpid())
        values["wrk"] = children_cpu()
        values["machine"], values["machine_total"] = machine_cpu()
        values["wall"] = time.perf_counter()
        return values

    def stop(self) -> dict[str, float]:
        after = self._read()
        wall = after["wall"] - self.before["wall"]
        cores = {
            k: round((after[k] - self.before[k]) / wall, 3)
            for k in after
            if k not in ("wall", "machine_total") and k in self.before
        }
        cores["machine_capacity"] = round(
            (after["machine_total"] - self.before["machine_total"]) / wall, 2
        )
        ours = sum(v for k, v in cores.items() if not k.startswith("machine"))
        cores["ours"] = round(ours, 3)
        cores["others"] = round(cores["machine"] - ours, 3)
        return cores


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    redis_server, wrk = require_tools()
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        sys.exit("bench/scale.py needs nginx (apt-get install nginx-light)")
    redis_port, hipchat_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    hipchat = FakeHipChat(base_url=f"http://127.0.0.1:{hipchat_port}")
    base_env = {**os.environ, "PYTHONPATH": str(REPO)}
    base_env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def addon_env(url: str, metrics: Path | None = None) -> dict[str, str]:
        env = {
            **base_env,
            "ADDON_BASE_URL": url,
            "ADDON_STORE_URL": redis_url,
            "ADDON_HIPCHAT_HOSTS": f"127.0.0.1:{hipchat_port}",
            "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
            "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
            "ADDON_LOG_LEVEL": "WARNING",
        }
        if metrics is not None:
            metrics.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        return env

    chosen = [s for s in SETUPS if s in args.setups]
    setups: dict[str, Setup] = {}
    for name in chosen:
        count = REPLICAS + 1 if name == "r3" else 1  # r3: nginx's port first
        ports = [free_port() for _ in range(count)]
        setups[name] = Setup(name, f"http://127.0.0.1:{ports[0]}", ports)

    redis_command = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    with contextlib.ExitStack() as stack:
        redis_process = stack.enter_context(started(redis_command, redis_port, workdir, "redis"))

        def start(setup: Setup, label: str, command: list[str], port: int, env: Any) -> None:
            process = stack.enter_context(started(command, port, workdir, label, env))
            setup.processes.append(process)

        for setup in setups.values():
            name, port = setup.name, setup.ports[0]
            if name in ("u1", "u2"):
                workers = 2 if name == "u2" else 1
                metrics = workdir / f"metrics-{name}" if workers > 1 else None
                setup.metrics_dir = metrics
                command = uvicorn_command(
                    "addon.app:create_app_from_environ", port, workers=workers
                )
                command = [*command[: -len(STACK)], *OLD_STACK]
                start(setup, name, command, port, addon_env(setup.url, metrics))
            elif name in ("w1", "w2", "w1-mp"):
                metrics = workdir / f"metrics-{name}" if name != "w1" else None
                setup.metrics_dir = metrics
                command = addon_command(port, workers=2 if name == "w2" else 1)
                start(setup, name, command, port, addon_env(setup.url, metrics))
            elif name == "r3":
                for index, replica in enumerate(setup.ports[1:]):
                    command = addon_command(replica, workers=1)
                    start(setup, f"r3-{index}", command, replica, addon_env(setup.url))
                conf = nginx_conf(workdir, port, setup.ports[1:])
                command = [nginx, "-p", str(workdir), "-c", str(conf)]
                start(setup, "nginx", command, port, None)
        # Wait for every worker of w2 to be up before anything is measured.
        await asyncio.sleep(2)

        async with served(hipchat.app, hipchat_port):
            first = next(s for s in setups.values() if s.name.startswith(("w", "r")))
            installed, install_seconds = await install_many(
                hipchat, first.url, args.installations, 16
            )
            path = await echo_webhook_path(hipchat, first.url)

            secrets = {i.oauth_id: i.oauth_secret for i in installed}
            (workdir / "secrets.json").write_text(json.dumps(secrets))
            import redis as sync_redis

            with sync_redis.Redis.from_url(redis_url) as client:
                client.mset({f"bench:secret:{k}": v for k, v in secrets.items()})
            floor_env = {
                **base_env,
                "BENCH_SECRETS": str(workdir / "secrets.json"),
                "BENCH_REDIS_URL": redis_url,
                "BENCH_FLOOR": "c",
            }
            for setup in setups.values():
                if setup.name in ("c1", "c2"):
                    workers = 2 if setup.name == "c2" else 1
                    command = uvicorn_command(
                        "floors:create", setup.ports[0], "--app-dir", str(BENCH), workers=workers
                    )
                    start(setup, setup.name, command, setup.ports[0], floor_env)
            await asyncio.sleep(2)

            templates = workdir / "addon.requests"
            templates.write_text(hipchat_requests(path, hipchat, installed, one_time=True))
            signed = workdir / "floor.requests"
            signed.write_text(hipchat_requests(path, hipchat, installed))
            tokens = workdir / "addon.tokens"
            urls = {name: setup.url + path for name, setup in setups.items()}
            files = {n: signed if n.startswith("c") else templates for n in setups}
            fresh = {n: installed[0] for n in setups if not n.startswith("c")}
            await check_replies(urls, files, fresh)

            def drive(setup: Setup, seconds: int, nonce: str, load: Load) -> dict[str, Any]:
                is_addon = not setup.name.startswith("c")
                if is_addon:
                    tokens.write_text(jwt_pool(installed, seconds * POOL_RATE))
                pids = setup.pids()
                before = requests_by_pid(setup.metrics_dir) if setup.metrics_dir else {}
                held: dict[str, int] = {}

                def look() -> None:
                    time.sleep(seconds / 2)
                    held.update(connections_by_pid(pids, setup.ports))

                looker = threading.Thread(target=look)
                sampler = Sampler({**pids, "redis": redis_process.pid})
                looker.start()
                report = run_wrk(
                    wrk,
                    urls[setup.name],
                    files[setup.name],
                    nonce,
                    concurrency=args.concurrency,
                    seconds=seconds,
                    tokens_file=tokens if is_addon else None,
                )
                cores = sampler.stop()
                looker.join()
                load.add(report)
                after = requests_by_pid(setup.metrics_dir) if setup.metrics_dir else {}
                served_by = {
                    str(pid): round(after[pid] - before.get(pid, 0.0)) for pid in sorted(after)
                }
                stacks = {
                    role: server_stack(pid)
                    for role, pid in pids.items()
                    if not role.startswith(("nginx", "supervisor"))
                }
                return {
                    "stack": stacks,
                    "requests_per_s": load.rounds[-1]["requests_per_s"],
                    "p99_ms": load.rounds[-1]["p99_ms"],
                    "cpu_cores": cores,
                    "connections": held,
                    "requests_by_worker_pid": served_by,
                }

            for setup in setups.values():  # warm-up, not counted
                await asyncio.to_thread(drive, setup, args.warmup, f"w{setup.name}", Load())
            for round_index in range(args.rounds):
                order = list(setups.values())
                if round_index % 2:
                    order.reverse()
                for setup in order:
                    nonce = f"r{round_index}{setup.name}"
                    run = await asyncio.to_thread(drive, setup, args.seconds, nonce, setup.load)
                    setup.runs.append(run)
                    print(
                        f"round {round_index} {setup.name}: {run['requests_per_s']:.0f} req/s; "
                        f"cores {run['cpu_cores']}; connections {run['connections']}; "
                        f"requests by pid {run['requests_by_worker_pid']}",
                        flush=True,
                    )

    return summarise(args, setups, install_seconds)


def summarise(
    args: argparse.Namespace, setups: dict[str, Setup], install_seconds: float
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "settings": {
            "installations": args.installations,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds": args.seconds,
        },
        "installs_per_s": round(args.installations / install_seconds, 1),
        "setups": {},
    }
    for name, setup in setups.items():
        summary = setup.load.summary()
        rates = [r["requests_per_s"] for r in setup.runs]
        mean_cores: dict[str, float] = {}
        for run in setup.runs:
            for role, value in run["cpu_cores"].items():
                mean_cores[role] = mean_cores.get(role, 0.0) + value / len(setup.runs)
        per_request = cpu_ms_per_request(setup.runs)
        result["setups"][name] = {
            "requests_per_s": summary["requests_per_s"],
            "cpu_ms_per_request": per_request,
            "ceiling_requests_per_s": ceiling(name, per_request),
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
            "errors": summary["errors"],
            "rates_per_round": rates,
            "mean_cpu_cores": {k: round(v, 3) for k, v in mean_cores.items()},
            "runs": setup.runs,
        }
    ratios = {}
    pairs = (("w2", "w1"), ("r3", "w1"), ("w1-mp", "w1"), ("c2", "c1"), ("u2", "u1"))
    for a, b in pairs:
        if a in setups and b in setups:
            paired = [
                x["requests_per_s"] / y["requests_per_s"]
                for x, y in zip(setups[a].runs, setups[b].runs, strict=True)
            ]
            ratios[f"{a}/{b}"] = {
                "overall": round(
                    setups[a].load.summary()["requests_per_s"]
                    / setups[b].load.summary()["requests_per_s"],
                    3,
                ),
                "per_round": [round(x, 3) for x in paired],
                "median": round(statistics.median(paired), 3),
            }
    result["ratios"] = ratios
    return result


def role_group(role: str) -> str | None:
    """What a process is, for CPU per request: the server's processes, nginx, the rest ours."""
    if role.startswith(("server", "worker", "supervisor")):
        return "server"
    if role.startswith("nginx"):
        return "nginx"
    if role.startswith("bench"):
        return "bench"
    return role if role in ("redis", "wrk") else None


def cpu_ms_per_request(runs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU ms per request by group, over every run (cores x seconds / requests)."""
    cpu: dict[str, float] = {}
    requests = 0.0
    for run in runs:
        rate = run["requests_per_s"]
        requests += rate
        for role, cores in run["cpu_cores"].items():
            group = role_group(role)
            if group is not None:
                cpu[group] = cpu.get(group, 0.0) + cores
    return {group: round(1000 * value / requests, 4) for group, value in cpu.items()}


def ceiling(name: str, per_request: dict[str, float]) -> float:
    """req/s if the machine's CPUs ran nothing but this set-up, wrk and Redis at these costs.

    One server process uses at most one core, so a single-process set-up is also bounded by
    1000 / its server ms; set-ups of several processes share all the CPUs.
    """
    total = sum(per_request.values())
    bound = 1000 * (os.cpu_count() or 1) / total
    if name in ("w1", "w1-mp", "c1", "u1"):
        bound = min(bound, 1000 / per_request["server"])
    return round(bound, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5, help="per set-up per round (whole s)")
    parser.add_argument("--warmup", type=int, default=1, help="per set-up, not counted (s)")
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        type=lambda text: text.split(","),
        help=f"comma-separated, of {','.join(SETUPS)} (default: all)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    unknown = set(args.setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown set-ups {sorted(unknown)}; choose from {', '.join(SETUPS)}")
    with tempfile.TemporaryDirectory(prefix="addon-scale-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result["setups"].items():
        cores = row["mean_cpu_cores"]
        print(
            f"{name:6} {row['requests_per_s']:8.0f} req/s  p99 {row['p99_ms']:7.1f} ms  "
            f"rounds {row['rates_per_round']}  machine {cores.get('machine')} of "
            f"{cores.get('machine_capacity')} cores, others {cores.get('others')}"
        )
    print(json.dumps(result["ratios"], indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
