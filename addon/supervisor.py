"""``serve --workers N`` (N > 1): N worker processes, each listening on its own socket.

uvicorn's own supervisor binds one socket that every worker accepts on; a burst of new
connections then goes mostly to the worker that wakes first (splits of 27/5 and 32/0 for 32 wrk
connections, bench/README.md, *Scaling*). Here each worker binds its own socket to the same
host:port with ``SO_REUSEPORT``, and the kernel spreads connections over them by a hash of each
connection's addresses. The supervisor binds nothing that a worker accepts on: it checks once, up
front, that the port is free (a port another server holds, even one that also sets
``SO_REUSEPORT``, is an error, not a silent share of its traffic), then starts the workers and:

- on SIGTERM or SIGINT sends SIGTERM to every worker, which drains as a single server does (no
  new connections, requests in flight finished, the app's lifespan shutdown), waits for them and
  returns 0;
- starts a worker again at once when it exits after it had started serving (a crash, a SIGKILL);
- starts a worker that exited *before* it served again only after a delay that doubles each time
  (``backoff``, 2 x ``backoff``, ...), and after ``attempts`` such failures in a row stops the
  others and returns 1, rather than spinning on a broken start;
- leaves no worker behind when it is itself killed: each worker stops gracefully once its
  supervisor is gone, so no orphan keeps a share of the port.

Workers start with multiprocessing's ``spawn``: a fresh interpreter (no state forked from the
supervisor), handed ``WorkerSpec`` as Python objects (the protocol class, the logging
dictionary), as uvicorn's own ``--workers`` did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

from addon.errors import ConfigError

__all__ = ["Supervisor", "WorkerSpec", "bind_reuseport", "check_port"]

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3  # uvicorn's exit status for a server that never started
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STEADY = 10.0  # seconds a worker must serve before its death counts as a one-off
MAX_CRASH_DELAY = 30.0  # the longest wait before starting a worker that keeps crashing


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What every worker serves: uvicorn's app string, the address, and ``uvicorn.Config``'s
    other keyword arguments (``factory``, ``log_config``, the protocol...). Pickled to each worker.
    """

    app: str
    host: str
    port: int
    options: dict[str, Any]


def _family(host: str) -> socket.AddressFamily:
    # As uvicorn's Config.bind_socket: an address with a colon is IPv6, anything else IPv4.
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port(host: str, port: int) -> int:
    """The port to serve on (a free one when ``port`` is 0); ConfigError when it is taken.

    The probe binds without ``SO_REUSEPORT`` and closes at once, so it fails on any listener,
    including another server's ``SO_REUSEPORT`` sockets, and leaves nothing bound.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the workers do
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc}; is another server "
                "running there? Stop it, or choose another port with -p"
            ) from None
        bound: int = probe.getsockname()[1]
        return bound


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with ``SO_REUSEPORT``: one of the workers' own sockets.

    Made with TCP's protocol number, so that asyncio's loop, too, sets ``TCP_NODELAY`` on the
    connections it accepts (``server.py`` sets it anyway).
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _work(spec: WorkerSpec, ready: Connection) -> None:  # pragma: no cover (a spawned process)
    """A worker process: its own socket, uvicorn's Server on it; ``ready`` told once it serves."""

    async def started() -> None:  # uvicorn calls it on its first tick after start-up
        if not ready.closed:
            with contextlib.suppress(OSError):  # the supervisor is gone: this worker stops anyway
                ready.send_bytes(b"ready")
            ready.close()

    config = uvicorn.Config(
        spec.app, host=spec.host, port=spec.port, callback_notify=started, **spec.options
    )  # applies the logging dictionary in this process
    try:
        sock = bind_reuseport(spec.host, spec.port)
    except OSError as exc:
        log.error("worker %d cannot bind %s:%d: %s", os.getpid(), spec.host, spec.port, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    server = uvicorn.Server(config)
    threading.Thread(target=_stop_with_supervisor, args=(server,), daemon=True).start()
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def _stop_with_supervisor(server: uvicorn.Server) -> None:  # pragma: no cover (in a worker)
    supervisor = multiprocessing.parent_process()
    if supervisor is not None:
        supervisor.join()  # returns when the supervisor's process is gone
        log.warning("worker %d: the supervisor is gone; stopping", os.getpid())
        server.should_exit = True


@dataclasses.dataclass
class _Slot:
    """One of the N workers, across its restarts."""

    number: int
    process: BaseProcess | None = None
    ready: Connection | None = None  # open until the worker says it serves, or exits
    serving: bool = False
    failures: int = 0  # start-up failures in a row
    start_at: float = 0.0  # when to start the next process (monotonic), while process is None
    serving_since: float = 0.0  # when the current process said it serves (monotonic)
    crashes: int = 0  # deaths in a row within STEADY seconds of serving


class Supervisor:
    """Runs ``workers`` processes serving ``spec``, each on its own ``SO_REUSEPORT`` socket.

    ``run`` returns 0 once a SIGTERM or SIGINT (or ``stop``) has stopped every worker, 1 when a
    worker failed to start ``attempts`` times in a row. A worker still running ``stop_timeout``
    seconds after its SIGTERM is killed.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        workers: int,
        *,
        stop_timeout: float = 30.0,
        backoff: float = 1.0,
        attempts: int = 5,
    ) -> None:
        self.spec = spec
        self.stop_timeout = stop_timeout
        self.backoff = backoff
        self.attempts = attempts
        self._slots = [_Slot(number) for number in range(1, workers + 1)]
        self._context = multiprocessing.get_context("spawn")
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        for end in (self._wakeup_r, self._wakeup_w):
            end.setblocking(False)
        self._stopping = threading.Event()
        self._signals: list[int] = []
        self._status = 0

    def stop(self) -> None:
        """Stop every worker gracefully and return from ``run``, as SIGTERM does."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # the wake-up buffer is full: run wakes anyway
            self._wakeup_w.send(b"\0")

    def run(self) -> int:
        """Check the port, start the workers, keep them running until stopped; the exit status."""
        previous: dict[int, Any] = {}
        wakeup_fd: int | None = None
        try:
            self.spec = dataclasses.replace(
                self.spec, port=check_port(self.spec.host, self.spec.port)
            )
            # A signal wakes the loop whichever thread the kernel delivers it to.
            wakeup_fd = signal.set_wakeup_fd(self._wakeup_w.fileno())
            previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
            log.info(
                "serving http://%s:%d with %d workers, each on its own socket (SO_REUSEPORT)",
                self.spec.host,
                self.spec.port,
                len(self._slots),
            )
            self._supervise()
        finally:
            self._stop_workers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if wakeup_fd is not None:
                signal.set_wakeup_fd(wakeup_fd)
            self._wakeup_r.close()
            self._wakeup_w.close()
        return self._status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # logged by the loop, not from inside a signal handler
        self.stop()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is None and slot.start_at <= now:
                    self._start(slot)
            waiting = [slot.start_at for slot in self._slots if slot.process is None]
            timeout = max(0.0, min(waiting) - now) if waiting else None
            woken = wait([self._wakeup_r, *self._watched()], timeout)
            if self._wakeup_r in woken:  # a signal, or stop(): read, or it stays readable
                self._wakeup_r.recv(4096)
            if self._stopping.is_set():
                break
            for slot in self._slots:
                self._check(slot, woken)
        for signum in self._signals[:1]:
            log.info("received %s; stopping the workers", signal.Signals(signum).name)

    def _watched(self) -> list[Any]:
        watched: list[Any] = []
        for slot in self._slots:
            if slot.process is not None:
                watched.append(slot.process.sentinel)
            if slot.ready is not None:
                watched.append(slot.ready)
        return watched

    def _start(self, slot: _Slot) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_work, args=(self.spec, writer), name=f"hipchat-addon worker {slot.number}"
        )
        process.start()
        writer.close()  # the worker holds the other copy: EOF here when it exits
        slot.process, slot.ready, slot.serving = process, reader, False
        log.info("started worker %d (pid %d)", slot.number, process.pid)

    def _check(self, slot: _Slot, woken: list[Any]) -> None:
        if slot.ready is not None and slot.ready in woken:
            with contextlib.suppress(EOFError, OSError):
                slot.ready.recv_bytes()
                slot.serving, slot.failures = True, 0
                slot.serving_since = time.monotonic()
            slot.ready.close()
            slot.ready = None
        process = slot.process
        if process is None or process.sentinel not in woken:
            return
        process.join()
        slot.process = None
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        self._restart(slot, process)

    def _restart(self, slot: _Slot, process: BaseProcess) -> None:
        number, pid, status = slot.number, process.pid, _describe(process.exitcode)
        if slot.serving:
            # Started again at once, unless it keeps dying soon after it began serving (a
            # crash on the first requests): then after the start-up back-off, up to 30 s.
            now = time.monotonic()
            slot.crashes = slot.crashes + 1 if now - slot.serving_since < STEADY else 0
            delay = 0.0
            if slot.crashes:
                delay = min(MAX_CRASH_DELAY, self.backoff * 2 ** (slot.crashes - 1))
            log.warning(
                "worker %d (pid %d) %s; starting another in %.1f s", number, pid, status, delay
            )
            slot.start_at = now + delay
            return
        slot.failures += 1
        if slot.failures >= self.attempts:
            log.error(
                "worker %d failed to start %d times in a row (last: pid %d %s); stopping",
                number,
                slot.failures,
                pid,
                status,
            )
            self._status = 1
            self._stopping.set()
            return
        delay = self.backoff * 2 ** (slot.failures - 1)
        log.warning(
            "worker %d (pid %d) %s before it served; trying again in %.1f s (%d of %d)",
            number,
            pid,
            status,
            delay,
            slot.failures,
            self.attempts,
        )
        slot.start_at = time.monotonic() + delay

    def _stop_workers(self) -> None:
        running = [slot.process for slot in self._slots if slot.process is not None]
        for process in running:
            process.terminate()  # SIGTERM, unless it has exited already
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error(
                    "worker (pid %d) still running %g s after SIGTERM; killing it",
                    process.pid,
                    self.stop_timeout,
                )
                process.kill()
                process.join()
        for slot in self._slots:
            slot.process = None
            if slot.ready is not None:
                slot.ready.close()
                slot.ready = None


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:  # a real-time signal, say: the enum does not name it
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
