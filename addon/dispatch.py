"""Dispatch: from a verified webhook to the integration handlers it selects, and their replies.

Selection, delivery, the reply window, timeouts and isolation live here, and nowhere else.
``Dispatcher.plan`` picks handlers from a ``wire.Webhook`` (pure): a ``room_message`` whose text
starts with ``/name`` goes to the command that owns ``/name`` (a dict lookup: nothing in a message
ever names a file), otherwise to every ``on_message`` pattern that matches; other events go to
their ``on_event`` handlers. A message
delivered twice (two matching webhooks, a retry, two replicas) runs once: its id is claimed in the
store first (by the webhook route, with the installation read; by ``handle`` otherwise).

The first (usually the only) handler runs in the request's own task, awaited directly, so its
timeouts bind to that task, and a command that finishes inside the reply window costs no task, no
future and no thread switch. The window is one timer. When the window closes first, the response
goes out from a task made for it then, and the handler runs on in the request's task. A webhook that
selects several handlers (patterns, events) runs the others in tasks of their own.

Replies (``Outbox``): the first reply ready within ``settings.reply_window`` seconds is the
webhook's 200 JSON response (a synchronous reply), sent through the route's ``respond`` as soon as
it is made; every later one is posted through ``Runtime.post_notification``. Each handler runs under
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
from collections.abc import Callable, Coroutine, Mapping, Sequence
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

__all__ = ["Dispatcher", "Outbox", "Plan", "Respond", "Signed"]

NOTICE_GRACE = 5.0  # seconds cancelled handlers get to tell their rooms, when draining
log = logging.getLogger("addon.dispatch")
_T = TypeVar("_T")
_COMMAND_TEXT = re.compile(r"/(\S+)\s*(.*)", re.DOTALL)
_NO_SENDER = "The room_message webhook needs item.message.from.id, the sending user's id"

#: Sends a webhook's response: the reply (a 200 with the JSON notification), or None (a 204).
Respond = Callable[[dict[str, object] | None], Coroutine[Any, Any, None]]


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
    """Where one webhook's replies go: the first one within the reply window is the webhook's
    response (``respond``); every later one (or any after the window) is posted through REST.

    The response is sent by the request's own task (the owner) whenever it is free to: when its
    handler replies, or once its handlers are done. Only when the owner is busy running its
    handler as the window closes (or another handler's task replies) is a task made to send it
    (``_late``), which the owner awaits before the request ends. The owner waits on a future only
    for the other handlers of a webhook that selects several.
    """

    def __init__(
        self,
        runtime: Runtime,
        installation: Installation,
        room: Room,
        workers: _Workers,
        respond: Respond,
    ) -> None:
        self._runtime = runtime
        self._installation = installation
        self._room = room
        self._workers = workers
        self._respond = respond
        self._owner = asyncio.current_task()
        self._is_open = True  # no response decided yet
        self._reply: dict[str, object] | None = None
        self._owner_answers = False  # decided while the owner waited: it sends ``_reply``
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._late: asyncio.Task[None] | None = None
        self.pending = 0

    async def send(self, notification: dict[str, object]) -> None:
        """Deliver a reply: as the webhook's response while it is open, else through REST.

        A reply through REST waits for the webhook's response, when a task is still sending it
        (the window closed while the handler ran): HipChat gets them in the order they were made.
        """
        if not self._is_open:
            if self._late is not None and not self._late.done():
                await asyncio.wait([self._late])  # its failure is the request's, not this reply's
            await self._runtime.post_notification(self._installation, self._room.id, notification)
            return
        self._is_open = False
        if asyncio.current_task() is self._owner:
            await self._respond(notification)  # the request's own task: send it now
        else:
            self._hand_over(notification)

    async def run_sync(self, func: Callable[[], _T], *, owner: str) -> _T:
        """Run ``func`` in a worker thread on behalf of integration ``owner``; its result."""
        context = contextvars.copy_context()
        return await self._workers.run(owner, functools.partial(context.run, func))

    def window_over(self) -> None:
        """The reply window closed (its timer): the response goes out now, empty if no reply."""
        if self._is_open:
            self._is_open = False
            self._hand_over(None)

    def job_done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._wake()

    def fail(self, exc: BaseException) -> bool:
        """Make ``exc`` the request's outcome (raise_errors); False once the response is decided."""
        if not self._is_open:
            return False
        self._is_open = False
        self._error = exc
        self._wake()
        return True

    async def finish(self) -> None:
        """In the owner, its own handler done: wait for any others (in the window), then answer.

        A stop (drain, or the server's graceful shutdown) while it waits ends the wait: the
        response goes out now, and what the other handlers say later goes through REST.
        """
        if self._is_open and self.pending > 0:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                if _spent_cancel() > 0:
                    raise
                self._waiter = None
        if self._error is not None:
            raise self._error
        if self._is_open or self._owner_answers:
            self._is_open = self._owner_answers = False
            await self._respond(self._reply)
        elif self._late is not None:
            await self._late  # the response is out before the request ends

    def _hand_over(self, reply: dict[str, object] | None) -> None:
        # Decided while the owner cannot send: it waits (it sends) or runs its handler (a task).
        if self._waiter is not None:
            self._reply, self._owner_answers = reply, True
            self._wake()
        else:
            self._late = asyncio.get_running_loop().create_task(self._respond(reply))

    def _wake(self) -> None:
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
        self._tasks: set[asyncio.Task[Any]] = set()  # running handlers, for drain
        self._deliveries: set[asyncio.Task[None]] = set()  # ``run``'s tasks (strong references)
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
        try:
            return await self.run(
                plan, installation, request_id=request_id, signed=signed, room=room
            )
        except ShuttingDown:  # not run: the next delivery runs it
            await self._release(plan, installation, request_id)
            raise

    async def run(
        self,
        plan: Plan,
        installation: Installation,
        *,
        request_id: str,
        signed: Signed | None = None,
        room: Room | None = None,
    ) -> dict[str, object] | None:
        """``deliver`` for a caller that wants the reply as a value, not sent through ``respond``.

        The handlers run in a task of their own (``deliver`` in it), and this returns as soon as
        the response is decided: the first reply, or None when the handlers end or the window
        closes without one. Errors raised before that are raised here.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, object] | None] = loop.create_future()

        async def respond(reply: dict[str, object] | None) -> None:
            if not answer.done():
                answer.set_result(reply)

        delivery = self.deliver(
            plan, installation, request_id=request_id, respond=respond, signed=signed, room=room
        )
        task = loop.create_task(delivery)
        self._deliveries.add(task)
        task.add_done_callback(functools.partial(self._delivered, answer))
        return await answer

    async def deliver(
        self,
        plan: Plan,
        installation: Installation,
        *,
        request_id: str,
        respond: Respond,
        signed: Signed | None = None,
        room: Room | None = None,
    ) -> None:
        """Run ``plan`` (its message id already claimed) and send the response once: ``respond``.

        The first handler runs here, in the caller's task (``_run_here``), any others in tasks of
        their own (``_start``). ``respond`` gets the first reply as soon as it is made, or None
        when the handlers end without one or ``reply_window`` s pass, whichever comes first; this
        returns when the first handler has ended and the response is out. ``ShuttingDown`` once
        ``drain`` began (it may have begun during the caller's store round trip): work started
        then would be neither awaited nor cancelled by it.
        """
        hook = plan.hook
        if room is None:
            room = _room_of(hook, installation, signed)
        if not plan.selected:
            await respond(None)
            return
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
        outbox = Outbox(self._runtime, installation, room, self._workers, respond)
        first, *others = [
            self._job(s, hook, sender, installation, room, outbox) for s in plan.selected
        ]
        outbox.pending = 1 + len(others)
        window = self._runtime.settings.reply_window
        timer = asyncio.get_running_loop().call_later(window, outbox.window_over)
        try:
            for job in others:
                self._start(job, outbox)
            await self._run_here(first, outbox)
            await outbox.finish()
        finally:
            timer.cancel()

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
        # A task of its own: the handlers after a webhook's first one (patterns, events).
        task = asyncio.get_running_loop().create_task(self._run(job, outbox))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_here(self, job: _Job, outbox: Outbox) -> None:
        """Run ``job`` in the current task: the command timeout and any timeout the handler opens
        bind to it (Python 3.11 has no eager tasks; this is the same without a task).

        The request's task is cancelled only when the add-on stops: by ``drain``, which waits
        for it like a task of its own, or by the server once its graceful shutdown timeout
        (``ADDON_SHUTDOWN_TIMEOUT``) has run out. The handler is then stopped and its room told;
        that cancel is spent, and the request still gets its response. A second cancel is not
        absorbed.
        """
        task = asyncio.current_task()
        assert task is not None  # a coroutine the loop runs always has a task
        self._tasks.add(task)
        try:
            await self._run(job, outbox)
        except asyncio.CancelledError:
            if _spent_cancel() > 0:
                raise
        finally:
            self._tasks.discard(task)

    def _delivered(
        self, answer: asyncio.Future[dict[str, object] | None], task: asyncio.Task[None]
    ) -> None:
        # ``run``'s task ended: its failure goes to the caller while it waits, else to the log.
        self._deliveries.discard(task)
        if task.cancelled():
            answer.cancel()
        elif (exc := task.exception()) is not None:
            if not answer.done():
                answer.set_exception(exc)
            else:
                log.error("Dispatch failed after the response", exc_info=exc)

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

    async def _release(self, plan: Plan, installation: Installation, request_id: str) -> None:
        """Delete the message-id claim ``_first_delivery`` made for ``request_id``."""
        message_id = plan.hook.message_id
        if plan.has_work and message_id is not None:
            key = self._runtime.keys.seen_message(installation.oauth_id, message_id)
            await self._runtime.store.delete_if_equal(key, request_id)

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
                try:
                    await _call(job)
                except asyncio.CancelledError as exc:
                    if _cancelling():  # a stop, or the command timeout: not the handler's doing
                        raise
                    # A cancelled future it awaited: its failure. In the request's own task, a
                    # CancelledError would end the request with no answer (the server's 500).
                    raise RuntimeError(f"{label} awaited something that was cancelled") from exc
        except ApprovalRequired as exc:
            await _tell(context, _approval_notice(label, exc, _sender_of(context)))
            return "approval"
        except asyncio.CancelledError:  # not the command timeout
            if _cancelling():  # the add-on is stopping this handler (not a future it awaited)
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


def _cancelling() -> int:
    """How many cancels of the current task are pending (``Task.cancelling``)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _spent_cancel() -> int:
    """Take back one cancel of the current task, whose work it stopped; the ones left.

    A ``CancelledError`` that no ``Task.cancel`` caused (a cancelled future the handler awaited)
    counts as one left: it is not ours to absorb.
    """
    task = asyncio.current_task()
    if task is None or task.cancelling() == 0:
        return 1
    return task.uncancel()


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
