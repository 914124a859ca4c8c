"""Dispatch: from a verified webhook body to the integration handlers it selects.

``Dispatcher.handle`` parses the body leniently (``addon.events``) and
picks handlers: a ``room_message`` whose text starts with ``/name`` goes to the command that owns
``/name`` (a dict lookup: nothing in a message ever names a file), otherwise to every
``on_message`` pattern that matches; other events go to their ``on_event`` handlers. A message
delivered twice (two matching webhooks, a retry, two replicas) runs once: its id is claimed in the
store first.

Replies: the first reply ready within ``settings.reply_window`` seconds is returned, for the route
to send as the webhook's 200 JSON response (a synchronous reply); every later one is posted through
``Runtime.post_notification``. Each handler runs under ``settings.command_timeout``, and this is
the one place where ``except Exception`` is allowed (the per-handler boundary): a handler that
raises or hangs is logged and its room gets a short red notice, and nothing else is affected.

See docs/protocol.md, Webhook payloads and Synchronous replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict, TypeVar

from addon.context import (
    Context,
    Room,
    RoomEvent,
    RoomMessage,
    Runtime,
    Sender,
    build_notification,
)
from addon.errors import (
    AddonError,
    ApprovalRequired,
    InvalidJWT,
    QuotaExceeded,
    RequestError,
    ShuttingDown,
    StoreUnavailable,
    UpstreamError,
)
from addon.events import Webhook, parse_webhook
from addon.installations import Installation
from addon.integrations import Command, Handler, Integration, check_unique
from addon.metrics import Metrics

__all__ = ["Dispatcher", "Runtime", "Signed", "Webhook", "parse_webhook"]

SEEN_TTL = 3600.0  # how long a message id is remembered, so a redelivery does not run twice
NOTICE_GRACE = 5.0  # seconds cancelled handlers get to tell their rooms, when draining
log = logging.getLogger("addon.webhooks")
_T = TypeVar("_T")
_C = TypeVar("_C", RoomMessage, RoomEvent)
_COMMAND_TEXT = re.compile(r"/(\S+)\s*(.*)", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Signed:
    """What a webhook's verified JWT vouches for (``routes.webhook`` builds it from the claims).

    The sender is the JWT's ``sub``; ``room_id`` is its ``context.room_id``; ``jti`` is claimed
    once, for ``ttl`` seconds (until the token's ``exp`` plus the leeway).
    """

    sender_id: str
    room_id: int | None
    jti: str
    ttl: float


@dataclasses.dataclass(frozen=True)
class _Job:
    """One handler about to run, with its context."""

    handler: Handler[RoomMessage] | Handler[RoomEvent]
    context: Context
    call: Callable[[], object]


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


class _Delivery:
    """The outbox of one webhook: the first reply within the window rides on the response."""

    def __init__(
        self, runtime: Runtime, installation: Installation, room: Room, workers: _Workers
    ) -> None:
        self._runtime = runtime
        self._installation = installation
        self._room = room
        self._workers = workers
        self._first: asyncio.Future[dict[str, object] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending = 0

    async def send(self, notification: dict[str, object]) -> None:
        if not self._first.done():
            self._first.set_result(notification)
            return
        await self._runtime.post_notification(self._installation, self._room.id, notification)

    async def run_sync(self, func: Callable[[], _T], *, owner: str) -> _T:
        context = contextvars.copy_context()
        return await self._workers.run(owner, functools.partial(context.run, func))

    def job_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and not self._first.done():
            self._first.set_result(None)

    def fail(self, exc: BaseException) -> bool:
        """Hand ``exc`` to the waiting response (raise_errors); False when it has gone."""
        if self._first.done():
            return False
        self._first.set_exception(exc)
        return True

    async def response(self, window: float) -> dict[str, object] | None:
        try:
            await asyncio.wait({self._first}, timeout=window)
        finally:
            if not self._first.done():
                self._first.set_result(None)  # the window is over: later replies go through REST
        return self._first.result()


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
        self._workers = _Workers(max_threads)
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []
        self._draining = False

    async def handle(
        self,
        event: Mapping[str, object],
        installation: Installation,
        *,
        request_id: str,
        signed: Signed | None = None,
    ) -> dict[str, object] | None:
        """Run what ``event`` selects; return the reply for the webhook response, or None.

        ``signed`` (a verified JWT) gives the sender and a room when the body has none, and its
        ``jti`` is claimed together with the message id: a second use is ``InvalidJWT``.
        """
        hook = parse_webhook(event)
        if signed is not None and hook.sender is None:
            hook = dataclasses.replace(hook, sender=Sender(signed.sender_id, "", ""))
        room = _room_of(hook, installation, signed)
        delivery = _Delivery(self._runtime, installation, room, self._workers)
        scope = _Scope(hook, installation, room, delivery, request_id)
        jobs = self._select(scope)
        if jobs and self._draining:
            raise ShuttingDown("The add-on is shutting down; deliver this webhook again shortly")
        if not await self._first_delivery(scope, signed, has_jobs=bool(jobs)) or not jobs:
            return None
        for job in jobs:
            delivery.pending += 1
            task = asyncio.create_task(self._run(job, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await delivery.response(self._runtime.settings.reply_window)

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

    def _select(self, scope: _Scope) -> list[_Job]:
        hook = scope.hook
        if hook.event != "room_message":
            return [
                _job(
                    h,
                    RoomEvent(**self._args(scope, i), event=e, sender=hook.sender, item=hook.item),
                )
                for i, e, h in self._events
                if e == hook.event
            ]
        name, args = _split_command(hook.text)
        owner = self._commands.get(name) if name is not None else None
        if owner is not None:
            integration, command = owner
            return [_job(command.handler, self._message(scope, integration, args, None))]
        return [
            _job(h, self._message(scope, i, hook.text, m))
            for i, pattern, h in self._patterns
            if (m := pattern.search(hook.text)) is not None
        ]

    def _message(
        self, scope: _Scope, integration: Integration, args: str, match: re.Match[str] | None
    ) -> RoomMessage:
        hook = scope.hook
        if hook.sender is None:
            raise RequestError(
                "The room_message webhook needs item.message.from.id, the sending user's id"
            )
        return RoomMessage(
            **self._args(scope, integration),
            text=hook.text,
            args=args,
            match=match,
            sender=hook.sender,
            message_id=hook.message_id,
        )

    def _args(self, scope: _Scope, integration: Integration) -> _ContextArgs:
        extra = scope.log_extra() | {"integration": integration.key}
        logger = logging.getLogger(f"addon.integrations.{integration.key}")
        return _ContextArgs(
            integration=integration,
            installation=scope.installation,
            room=scope.room,
            webhook=scope.hook.body,
            runtime=self._runtime,
            outbox=scope.delivery,
            log=logging.LoggerAdapter(logger, extra),
        )

    async def _first_delivery(
        self, scope: _Scope, signed: Signed | None, *, has_jobs: bool
    ) -> bool:
        """Claim the JWT's jti and the message id in one store round trip.

        A used jti raises ``InvalidJWT`` (a replay); False when another delivery (or replica)
        already ran the message. The message id is claimed only when something will run.
        """
        keys, oauth_id = self._runtime.keys, scope.installation.oauth_id
        entries: list[tuple[str, str, float | None]] = []
        if signed is not None:
            entries.append((keys.jwt_id(oauth_id, signed.jti), scope.request_id, signed.ttl))
        message_id = scope.hook.message_id
        if has_jobs and message_id is not None:
            key = keys.seen_message(oauth_id, message_id)
            entries.append((key, scope.request_id, SEEN_TTL))
        if not entries:
            return True
        claimed = await self._runtime.store.put_many_if_absent(entries)
        if signed is not None and not claimed[0]:
            raise InvalidJWT(
                f"The JWT from {oauth_id!r} was already used; sign every request with a fresh jti"
            )
        if not claimed[-1]:
            log.info("Message delivered again; it already ran", extra=scope.log_extra())
            return False
        return True

    async def _run(self, job: _Job, delivery: _Delivery) -> None:
        started, outcome = time.perf_counter(), "cancelled"
        try:
            outcome = await self._guarded(job)
        # Still the per-handler boundary: what _guarded lets out (its own re-raise in raise_errors
        # mode, or a failure to tell the room) must not escape the task.
        except Exception as exc:
            if not self._raise_errors:
                job.context.log.exception("%s could not be finished", job.handler.label)
            elif not delivery.fail(exc):
                self._errors.append(exc)
            outcome = "error"
        finally:
            key, elapsed = job.context.integration.key, time.perf_counter() - started
            self._metrics.observe_handler(key, outcome, elapsed)
            delivery.job_done()

    async def _guarded(self, job: _Job) -> str:
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
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                context.log.warning("%s timed out after %g s", label, timeout)
                await _tell(context, _notice(f"{label} timed out after {timeout:g} s"))
                return "timeout"
            context.log.exception("%s failed", label)
            if self._raise_errors:
                raise
            await _tell(context, _notice(_failure_text(label, exc)))
            return "error"
        return "ok"


@dataclasses.dataclass(frozen=True)
class _Scope:
    """One webhook being dispatched."""

    hook: Webhook
    installation: Installation
    room: Room
    delivery: _Delivery
    request_id: str

    def log_extra(self) -> dict[str, object]:
        return {
            "oauth_id": self.installation.oauth_id,
            "room_id": self.room.id,
            "request_id": self.request_id,
            "event": self.hook.event,
        }


class _ContextArgs(TypedDict):
    integration: Integration
    installation: Installation
    room: Room
    webhook: Mapping[str, object]
    runtime: Runtime
    outbox: _Delivery
    log: logging.LoggerAdapter[logging.Logger]


def _job(handler: Handler[_C], context: _C) -> _Job:
    return _Job(handler, context, functools.partial(handler.func, context))


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
        await context.outbox.send(notification)
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
