"""Dispatch: from a verified webhook to the integration handlers it selects, and their replies.

Selection, delivery, the reply window, timeouts and isolation live here, and nowhere else.
``Dispatcher.plan`` picks handlers from a ``wire.Webhook`` (pure): a ``room_message`` whose text
starts with ``/name`` goes to the command that owns ``/name`` (a dict lookup: nothing in a message
ever names a file), otherwise to every ``on_message`` pattern that matches; other events go to
their ``on_event`` handlers. A message
delivered twice (two matching webhooks, a retry, two replicas) runs once: its id is claimed in the
store first (by the webhook route, with the installation read; by ``handle`` otherwise).

Each handler runs in a task of its own (its timeouts bind to it); the response waits for the first
reply with no more than one future and one timer, and not at all once the reply is there.

Replies (``Outbox``): the first reply ready within ``settings.reply_window`` seconds is returned,
for the route to send as the webhook's 200 JSON response (a synchronous reply); every later one is
posted through ``Runtime.post_notification``. Each handler runs under
``settings.command_timeout``, and this is the one place where ``except Exception`` is allowed
(the per-handler boundary): a handler that raises or hangs is logged and its room gets a short
red notice, and nothing else is affected.

See docs/protocol.md, Webhook payloads and Synchronous replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict, TypeVar

from addon.context import (
    LOG_FIELDS,
    Context,
    RoomEvent,
    RoomMessage,
    Runtime,
    build_notification,
    context_log,
)
from addon.errors import (
    AddonError,
    ApprovalRequired,
    QuotaExceeded,
    RequestError,
    ShuttingDown,
    StoreUnavailable,
    UpstreamError,
)
from addon.installations import Installation
from addon.integrations import Command, Handler, Integration, check_unique
from addon.metrics import Metrics
from addon.verification import SEEN_TTL
from addon.wire import Room, Sender, Webhook, parse_webhook

__all__ = ["Dispatcher", "Outbox", "Plan", "Signed"]

NOTICE_GRACE = 5.0  # seconds cancelled handlers get to tell their rooms, when draining
log = logging.getLogger("addon.dispatch")
_T = TypeVar("_T")
_COMMAND_TEXT = re.compile(r"/(\S+)\s*(.*)", re.DOTALL)
_NO_SENDER = "The room_message webhook needs item.message.from.id, the sending user's id"


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """What a webhook's verified JWT vouches for (``routes`` builds it from the claims).

    The sender is the JWT's ``sub``; ``room_id`` is its ``context.room_id``. The ``jti`` is
    not here: ``addon.verification.Verifier`` claims it with the installation read, before this
    is built.
    """

    sender_id: str
    room_id: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Selected:
    """A handler a webhook selects, before any context exists."""

    integration: Integration
    handler: Handler[RoomMessage] | Handler[RoomEvent]
    args: str
    match: re.Match[str] | None
    event: str | None  # the event name for on_event handlers; None for messages


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What a webhook selects: ``Dispatcher.plan`` (pure) before ``Dispatcher.run``."""

    hook: Webhook
    selected: tuple[_Selected, ...]

    @property
    def has_work(self) -> bool:
        """True when some handler will run (only then is the message id claimed)."""
        return bool(self.selected)


@dataclasses.dataclass(frozen=True)
class _Job:
    """One handler about to run, with its context."""

    handler: Handler[RoomMessage] | Handler[RoomEvent]
    context: Context
    call: Callable[[], object]
    integration_key: str


class _Workers:
    """The integration worker threads; one integration holds at most half of them.

    A call that timed out keeps its thread until the function returns (Python cannot stop a
    thread), so a slot is given back when the thread finishes, not when the caller gives up: an
    integration that hangs uses up its own slots, never the other integrations' threads.
    """

    def __init__(self, max_threads: int) -> None:
        self.executor = ThreadPoolExecutor(max_threads, thread_name_prefix="integration")
        self.per_owner = max(1, max_threads // 2)
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def run(self, owner: str, func: Callable[[], _T]) -> _T:
        slots = self._slots.setdefault(owner, asyncio.Semaphore(self.per_owner))
        await slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            future = self.executor.submit(func)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda _: _release(loop, slots))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _release(loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits any more
        loop.call_soon_threadsafe(slots.release)


class Outbox:
    """Where one webhook's replies go: the first one within the reply window rides on the
    webhook's response; every later one (or any after the window) is posted through REST.

    No future exists unless the route has to wait for a handler that is still running.
    """

    def __init__(
        self, runtime: Runtime, installation: Installation, room: Room, workers: _Workers
    ) -> None:
        self._runtime = runtime
        self._installation = installation
        self._room = room
        self._workers = workers
        self._reply: dict[str, object] | None = None
        self._error: BaseException | None = None
        self._is_open = True  # the response is not settled yet
        self._waiter: asyncio.Future[None] | None = None
        self.pending = 0

    async def send(self, notification: dict[str, object]) -> None:
        """Deliver a reply: in the webhook response while it is open, else through REST."""
        if self._is_open:
            self._settle(notification)
            return
        await self._runtime.post_notification(self._installation, self._room.id, notification)

    async def run_sync(self, func: Callable[[], _T], *, owner: str) -> _T:
        """Run ``func`` in a worker thread on behalf of integration ``owner``; its result."""
        context = contextvars.copy_context()
        return await self._workers.run(owner, functools.partial(context.run, func))

    def job_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self._is_open:
            self._settle(None)

    def fail(self, exc: BaseException) -> bool:
        """Hand ``exc`` to the waiting response (raise_errors); False when it has gone."""
        if not self._is_open:
            return False
        self._error = exc
        self._settle(None)
        return True

    async def response(self, window: float) -> dict[str, object] | None:
        """The reply for the webhook response: at once when settled, else within ``window`` s."""
        if self._is_open:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(window, self._settle, None)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._settle(None)  # the window is over: later replies go through REST
        if self._error is not None:
            raise self._error
        return self._reply

    def _settle(self, reply: dict[str, object] | None) -> None:
        if not self._is_open:
            return
        self._is_open, self._reply = False, reply
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Dispatcher:
    """Runs the handlers a webhook selects, each isolated, with a timeout."""

    def __init__(
        self,
        integrations: Sequence[Integration],
        runtime: Runtime,
        *,
        raise_errors: bool = False,
        max_threads: int = 16,
        metrics: Metrics | None = None,
    ) -> None:
        check_unique(integrations)
        self._metrics = metrics or Metrics()
        self._runtime = runtime
        self._raise_errors = raise_errors
        self._commands: dict[str, tuple[Integration, Command]] = {
            name: (i, command) for i in integrations for name, command in i.commands.items()
        }
        self._patterns = [(i, p, h) for i in integrations for p, h in i.patterns]
        self._events = [(i, e, h) for i in integrations for e, h in i.events]
        self._logs = {i.key: context_log(i.key) for i in integrations}
        self._workers = _Workers(max_threads)
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []
        self._draining = False
        # A request id: this process's random prefix and a counter (no uuid4 per request).
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count(1)

    def request_id(self) -> str:
        """A fresh id for one request (32 hex digits, unique per process)."""
        return f"{self._id_prefix}{next(self._ids):016x}"

    def plan(self, hook: Webhook) -> Plan:
        """The handlers ``hook`` selects (pure: no store, no context yet)."""
        plan = Plan(hook, tuple(self._select(hook)))
        if plan.has_work and self._draining:
            raise ShuttingDown("The add-on is shutting down; deliver this webhook again shortly")
        return plan

    async def handle(
        self,
        event: Mapping[str, object] | Webhook,
        installation: Installation,
        *,
        request_id: str,
        signed: Signed | None = None,
    ) -> dict[str, object] | None:
        """Run what ``event`` selects; return the reply for the webhook response, or None.

        ``signed`` (a verified JWT) gives the sender and a room when the body has none. A
        message id that already ran answers None.
        """
        hook = event if isinstance(event, Webhook) else parse_webhook(event)
        plan = self.plan(hook)
        room = _room_of(hook, installation, signed)
        _require_sender(plan, signed)  # before the claim: a corrected retry must still run
        if not await self._first_delivery(plan, installation, request_id):
            return None
        return await self.run(plan, installation, request_id=request_id, signed=signed, room=room)

    async def run(
        self,
        plan: Plan,
        installation: Installation,
        *,
        request_id: str,
        signed: Signed | None = None,
        room: Room | None = None,
    ) -> dict[str, object] | None:
        """Run ``plan`` (its message id already claimed); the reply for the response, or None.

        Each handler runs in a task of its own (``_start``); the response waits for the first
        reply or for every handler to end, ``reply_window`` s at most. ``ShuttingDown`` once
        ``drain`` began (it may have begun during the caller's store round trip): a task started
        then would be neither awaited nor cancelled by it.
        """
        hook = plan.hook
        if room is None:
            room = _room_of(hook, installation, signed)
        if not plan.selected:
            return None
        if self._draining:
            raise ShuttingDown("The add-on is shutting down; deliver this webhook again shortly")
        sender = hook.sender
        if sender is None and signed is not None:
            sender = Sender(signed.sender_id, "", "")
        LOG_FIELDS.set(
            {
                "oauth_id": installation.oauth_id,
                "room_id": room.id,
                "request_id": request_id,
                "event": hook.event,
            }
        )
        outbox = Outbox(self._runtime, installation, room, self._workers)
        jobs = [self._job(s, hook, sender, installation, room, outbox) for s in plan.selected]
        outbox.pending = len(jobs)
        for job in jobs:
            self._start(job, outbox)
        return await outbox.response(self._runtime.settings.reply_window)

    def room_of(self, hook: Webhook, installation: Installation, signed: Signed | None) -> Room:
        """The one room of ``hook`` (``RequestError`` when it names none or another one)."""
        return _room_of(hook, installation, signed)

    async def drain(self, grace: float | None = None) -> None:
        """Stop taking work, wait ``grace`` s for handlers, then cancel the rest (rooms told)."""
        self._draining = True
        if grace is None:
            grace = self._runtime.settings.shutdown_timeout
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=NOTICE_GRACE)
        self._workers.shutdown()
        if self._errors:
            raise self._errors[0]

    def _start(self, job: _Job, outbox: Outbox) -> None:
        # A task of its own, even for a quick handler: the command timeout (and any timeout or
        # cancel scope the handler opens) binds to the current task, so on Python 3.11 a handler
        # cannot take its first steps in the request's task (3.12's eager tasks could).
        task = asyncio.get_running_loop().create_task(self._run(job, outbox))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _select(self, hook: Webhook) -> list[_Selected]:
        if hook.event != "room_message":
            return [_Selected(i, h, "", None, e) for i, e, h in self._events if e == hook.event]
        name, args = _split_command(hook.text)
        owner = self._commands.get(name) if name is not None else None
        if owner is not None:
            integration, command = owner
            return [_Selected(integration, command.handler, args, None, None)]
        return [
            _Selected(i, h, hook.text, m, None)
            for i, pattern, h in self._patterns
            if (m := pattern.search(hook.text)) is not None
        ]

    def _job(
        self,
        selected: _Selected,
        hook: Webhook,
        sender: Sender | None,
        installation: Installation,
        room: Room,
        outbox: Outbox,
    ) -> _Job:
        integration = selected.integration
        common = _ContextArgs(
            _integration=integration,
            installation=installation,
            room=room,
            _webhook=hook.body,
            _runtime=self._runtime,
            _outbox=outbox,
            log=self._logs[integration.key],
        )
        context: RoomMessage | RoomEvent
        if selected.event is not None:
            context = RoomEvent(**common, event=selected.event, sender=sender, item=hook.item)
        elif sender is None:
            raise RequestError(_NO_SENDER)
        else:
            context = RoomMessage(
                **common,
                text=hook.text,
                args=selected.args,
                match=selected.match,
                sender=sender,
                message_id=hook.message_id,
            )
        func: Callable[[Any], object] = selected.handler.func
        return _Job(selected.handler, context, functools.partial(func, context), integration.key)

    async def _first_delivery(
        self, plan: Plan, installation: Installation, request_id: str
    ) -> bool:
        """Claim the message id (only when something will run) in one store round trip.

        False when another delivery (or replica) already ran the message.
        """
        keys, oauth_id = self._runtime.keys, installation.oauth_id
        message_id = plan.hook.message_id
        if not plan.has_work or message_id is None:
            return True
        entry = (keys.seen_message(oauth_id, message_id), request_id, SEEN_TTL)
        claimed = await self._runtime.store.put_many_if_absent([entry])
        if not claimed[0]:
            log.info("Message delivered again; it already ran", extra={"oauth_id": oauth_id})
            return False
        return True

    async def _run(self, job: _Job, outbox: Outbox) -> None:
        """Run one handler under the command timeout: the per-handler boundary."""
        started, outcome = time.perf_counter(), "cancelled"
        try:
            outcome = await self._guarded(job, outbox)
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.observe_handler(job.integration_key, outcome, elapsed)
            outbox.job_done()

    async def _guarded(self, job: _Job, outbox: Outbox) -> str:
        """Run one handler, at the one place ``except Exception`` is allowed; return its outcome."""
        label, context = job.handler.label, job.context
        timeout = self._runtime.settings.command_timeout
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                await _call(job)
        except ApprovalRequired as exc:
            await _tell(context, _approval_notice(label, exc, _sender_of(context)))
            return "approval"
        except asyncio.CancelledError:
            if self._draining:
                await _tell(context, _notice(f"{label} was stopped: the add-on is restarting"))
            raise
        except Exception as exc:  # the one place that catches everything: a handler's failure
            if isinstance(exc, TimeoutError) and scope.expired():
                context.log.warning("%s timed out after %g s", label, timeout)
                await _tell(context, _notice(f"{label} timed out after {timeout:g} s"))
                return "timeout"
            context.log.exception("%s failed", label)
            if not self._raise_errors:
                await _tell(context, _notice(_failure_text(label, exc)))
            elif not outbox.fail(exc):
                self._errors.append(exc)
            return "error"
        return "ok"


class _ContextArgs(TypedDict):
    _integration: Integration
    installation: Installation
    room: Room
    _webhook: Mapping[str, object]
    _runtime: Runtime
    _outbox: Outbox
    log: logging.LoggerAdapter[logging.Logger]


async def _call(job: _Job) -> None:
    if job.handler.is_async:
        outcome = job.call()
    else:
        outcome = await job.context.run_sync(job.call)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    if isinstance(outcome, str) and outcome:
        await job.context.reply(outcome)
    elif outcome is not None and not isinstance(outcome, str):
        raise TypeError(
            f"{job.handler.label} returned a {type(outcome).__name__}; return a str or None"
        )


async def _tell(context: Context, notification: dict[str, object]) -> None:
    # The room may be unreachable too (token revoked, HipChat down): log, never raise from here.
    try:
        await context._outbox.send(notification)
    except AddonError as exc:
        context.log.warning("Could not tell the room: %s", exc)


def _notice(text: str) -> dict[str, object]:
    return build_notification(text, color="red")


def _failure_text(label: str, exc: Exception) -> str:
    # Say whose fault it was when we know (never the details: they may hold secrets).
    if isinstance(exc, UpstreamError):
        return f"{label} failed: HipChat could not be reached or refused; try again shortly"
    if isinstance(exc, StoreUnavailable):
        return f"{label} failed: the add-on's store is unavailable; try again shortly"
    if isinstance(exc, QuotaExceeded):
        return f"{label} failed: {exc}"  # written for the room: names no secret
    return f"{label} failed; the error is logged"


def _sender_of(context: Context) -> Sender | None:
    return context.sender if isinstance(context, RoomMessage | RoomEvent) else None


def _approval_notice(label: str, exc: ApprovalRequired, sender: Sender | None) -> dict[str, object]:
    if exc.approval_url is None:
        return build_notification(
            f"{label} needs your approval; ask an admin to reinstall", color="yellow"
        )
    # The link goes to the whole room (a private message needs a user token's send_message
    # scope): a text notification, so HipChat notifies the @mentioned user and links the URL.
    # Only that user's own HipChat account can complete it (the callback checks the owner).
    who = _addressee(sender)
    text = (
        f"{who}: {label} needs your approval. Only {who} should follow this link: "
        f"{exc.approval_url} — then try again"
    )
    return build_notification(text, color="yellow", notify=True)


def _addressee(sender: Sender | None) -> str:
    """``@mention_name`` when the webhook told us, else the name (or the id)."""
    if sender is None:
        return "the user who sent the command"
    if sender.mention_name:
        return f"@{sender.mention_name}"
    return sender.name or f"user {sender.id}"


def _split_command(text: str) -> tuple[str | None, str]:
    """``("echo", "hi")`` for ``"/Echo hi"``; ``(None, text)`` when it is not a command."""
    match = _COMMAND_TEXT.fullmatch(text.strip())
    if match is None:
        return None, text
    return match.group(1).lower(), match.group(2).rstrip()


def _require_sender(plan: Plan, signed: Signed | None) -> None:
    """``RequestError`` when a message handler would run with no sender to give it."""
    if plan.hook.sender is None and signed is None and any(s.event is None for s in plan.selected):
        raise RequestError(_NO_SENDER)


def _room_of(hook: Webhook, installation: Installation, signed: Signed | None) -> Room:
    """The one room of a webhook: ``item.room.id`` (the id the JWT check compared), else the
    JWT's ``context.room_id``, else the installation's room. Replies go there and nowhere else.
    """
    allowed = installation.room_id
    if hook.room is not None:
        if allowed is not None and hook.room.id != allowed:
            raise RequestError(
                f"The webhook is for room {hook.room.id}, but the installation is in room "
                f"{allowed} only; send it for that room"
            )
        return hook.room
    for room_id in (signed.room_id if signed is not None else None, allowed):
        if room_id is not None:
            return Room(room_id)
    raise RequestError("The webhook names no room; send the room's id as item.room.id")
