"""Dispatch: handler selection, replies in and after the window, isolation, de-duplication."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

from addon.context import RoomEvent, RoomMessage
from addon.dispatch import Dispatcher, Respond, Signed
from addon.errors import (
    ApprovalRequired,
    HipChatAPIError,
    RequestError,
    ShuttingDown,
)
from addon.installations import Installation
from addon.integrations import Integration
from addon.seal import Sealer
from addon.settings import Secret, Settings
from addon.store import Keys, Store
from addon.wire import parse_webhook

if TYPE_CHECKING:
    from addon.hipchat import HipChatClient

ROOM = 10
SETTINGS = Settings(reply_window=1.0, command_timeout=2.0, shutdown_timeout=2.0)
_ids = itertools.count(1)


@dataclasses.dataclass
class RecordingRuntime:
    """A ``Runtime`` that records what would go to HipChat (an injected fake, not a mock)."""

    store: Store
    keys: Keys = dataclasses.field(default_factory=lambda: Keys("test-addon"))
    settings: Settings = dataclasses.field(default_factory=lambda: SETTINGS)
    posted: list[tuple[int, dict[str, object]]] = dataclasses.field(default_factory=list)
    token_requests: int = 0
    approval_url: str | None = "https://hipchat.test/approve?state=abc"

    def client_for(self, installation: Installation) -> HipChatClient:
        raise NotImplementedError("these tests make no REST calls")

    async def post_notification(
        self, installation: Installation, room_id: int, notification: dict[str, object]
    ) -> None:
        self.posted.append((room_id, notification))

    async def addon_token(self, installation: Installation) -> str:
        self.token_requests += 1
        return f"addon-token-of-{installation.oauth_id}"

    async def user_client(self, installation: Installation, user_id: str) -> HipChatClient:
        raise ApprovalRequired(f"User {user_id} has not approved", approval_url=self.approval_url)

    def messages(self) -> list[object]:
        """The text of every posted notification."""
        return [notification["message"] for _room, notification in self.posted]


def installation(room_id: int | None = None, oauth_id: str = "oauth-1") -> Installation:
    """A stored installation as the dispatcher receives it."""
    return Installation(
        oauth_id=oauth_id,
        oauth_secret=Secret("installation-secret-0123456789abcdef"),
        group_id=1,
        room_id=room_id,
        capabilities_url="https://hipchat.test/v2/capabilities",
        token_url="https://hipchat.test/v2/oauth/token",
        authorization_url=None,
        api_url="https://hipchat.test/v2/",
        scopes=("send_notification",),
        installed_at=0.0,
    )


async def installed(runtime: RecordingRuntime, *oauth_ids: str) -> RecordingRuntime:
    """``runtime`` with ``oauth_ids`` (default ``oauth-1``) stored: storage writes need that."""
    for oauth_id in oauth_ids or ("oauth-1",):
        record = installation(oauth_id=oauth_id).to_record(Sealer(None))
        await runtime.store.put(runtime.keys.installation(oauth_id), record)
    return runtime


def message(text: str, *, message_id: str | None = None, room: int = ROOM) -> dict[str, object]:
    """A room_message webhook body (docs/protocol.md); a fresh message id unless one is given."""
    return {
        "event": "room_message",
        "item": {
            "message": {
                "date": "2015-01-20T22:45:06.662545+00:00",
                "from": {"id": 5, "mention_name": "Blinky", "name": "Blinky the Fish"},
                "id": message_id or f"msg-{next(_ids)}",
                "message": text,
                "type": "message",
            },
            "room": {"id": room, "name": "The Weather Channel"},
        },
        "oauth_client_id": "oauth-1",
        "webhook_id": 578829,
    }


def text(text: str, **extra: object) -> dict[str, object]:
    """The notification body a plain-text reply becomes."""
    return {"message": text, "message_format": "text", "notify": False, **extra}


def runtime_with(
    store: Store, *, reply_window: float = 1.0, command_timeout: float = 2.0
) -> RecordingRuntime:
    """A runtime with another reply window or command timeout."""
    settings = dataclasses.replace(
        SETTINGS, reply_window=reply_window, command_timeout=command_timeout
    )
    return RecordingRuntime(store, settings=settings)


async def dispatch(
    dispatcher: Dispatcher, body: dict[str, object], room_id: int | None = None
) -> dict[str, object] | None:
    """What the route does with a verified webhook."""
    return await dispatcher.handle(body, installation(room_id), request_id="req-1")


def _shouter() -> Integration:
    integration = Integration("shout", name="Shout")

    @integration.command("shout", help="Shout the text", usage="/shout <text>")
    async def shout(message: RoomMessage) -> None:
        await message.reply(message.args.upper())

    return integration


@pytest.mark.anyio
async def test_a_quick_reply_is_the_webhook_response(store: Store) -> None:
    runtime = RecordingRuntime(store)
    reply = await dispatch(Dispatcher([_shouter()], runtime), message("/Shout  hello there "))
    assert reply == text("HELLO THERE")
    assert runtime.posted == []


@pytest.mark.anyio
async def test_a_slow_reply_is_posted_after_the_window(store: Store) -> None:
    runtime = runtime_with(store, reply_window=0.01)  # /slow waits on release: past any window
    integration = Integration("slow")
    release = asyncio.Event()

    @integration.command("slow")
    async def slow(message: RoomMessage) -> None:
        await release.wait()
        await message.reply("done", color="green")

    dispatcher = Dispatcher([integration], runtime)
    assert await dispatch(dispatcher, message("/slow")) is None
    release.set()
    await dispatcher.drain(5)
    assert runtime.posted == [(ROOM, text("done", color="green"))]


@pytest.mark.anyio
async def test_the_first_reply_rides_on_the_response_and_the_others_are_posted(
    store: Store,
) -> None:
    runtime = RecordingRuntime(store)
    integration = Integration("twice")

    @integration.command("twice")
    async def twice(message: RoomMessage) -> None:
        await message.reply("one")
        await message.reply("two", html=True, notify=True)

    dispatcher = Dispatcher([integration], runtime)
    assert await dispatch(dispatcher, message("/twice")) == text("one")
    await dispatcher.drain(5)
    assert runtime.posted == [(ROOM, text("two", message_format="html", notify=True))]


@pytest.mark.anyio
async def test_a_raising_handler_gets_a_red_notice_and_a_logged_traceback(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    integration = Integration("boom")

    @integration.command("boom")
    async def boom(message: RoomMessage) -> None:
        raise RuntimeError("password=hunter2")

    dispatcher = Dispatcher([integration, _shouter()], RecordingRuntime(store))
    with caplog.at_level(logging.ERROR):
        reply = await dispatch(dispatcher, message("/boom"))
    assert reply == text("/boom failed; the error is logged", color="red")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])
    assert (record.__dict__["integration"], record.__dict__["request_id"]) == ("boom", "req-1")
    assert await dispatch(dispatcher, message("/shout still works")) == text("STILL WORKS")


@pytest.mark.anyio
async def test_raise_errors_re_raises(store: Store) -> None:
    integration = Integration("boom")

    @integration.command("boom")
    def boom(message: RoomMessage) -> None:
        raise LookupError("bug")

    dispatcher = Dispatcher([integration], RecordingRuntime(store), raise_errors=True)
    with pytest.raises(LookupError, match="bug"):
        await dispatch(dispatcher, message("/boom"))


@pytest.mark.anyio
async def test_raise_errors_re_raises_late_failures_from_drain(store: Store) -> None:
    integration = Integration("late")

    @integration.command("late")
    async def late(message: RoomMessage) -> None:
        await message.reply("starting")
        raise LookupError("late bug")

    runtime = RecordingRuntime(store)
    dispatcher = Dispatcher([integration], runtime, raise_errors=True)
    assert await dispatch(dispatcher, message("/late")) == text("starting")
    with pytest.raises(LookupError, match="late bug"):
        await dispatcher.drain(5)
    assert runtime.posted == []


@pytest.mark.anyio
async def test_a_hanging_handler_is_cancelled_and_the_room_told(store: Store) -> None:
    runtime = runtime_with(store, command_timeout=0.05, reply_window=2.0)
    integration = Integration("hang")
    cancelled = asyncio.Event()

    @integration.command("hang")
    async def hang(message: RoomMessage) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    reply = await dispatch(Dispatcher([integration], runtime), message("/hang"))
    assert reply == text("/hang timed out after 0.05 s", color="red")
    assert cancelled.is_set()


@pytest.mark.anyio
async def test_a_hanging_sync_handler_is_abandoned_and_the_room_told(store: Store) -> None:
    runtime = runtime_with(store, command_timeout=0.05, reply_window=0.01)
    integration = Integration("block")
    release = threading.Event()

    @integration.command("block")
    def block(message: RoomMessage) -> str:
        release.wait(5)
        return "too late"

    dispatcher = Dispatcher([integration], runtime)
    assert await dispatch(dispatcher, message("/block")) is None
    await dispatcher.drain(5)
    release.set()
    assert runtime.messages() == ["/block timed out after 0.05 s"]


@pytest.mark.anyio
async def test_a_message_delivered_twice_runs_once(store: Store) -> None:
    runs: list[str] = []
    integration = Integration("count")

    @integration.command("count")
    async def count(message: RoomMessage) -> str:
        runs.append(message.text)
        return "counted"

    body = message("/count", message_id="00a3eb7f-fac5-496a-8d64-a9050c712ca1")
    first = Dispatcher([integration], RecordingRuntime(store))
    replica = Dispatcher([integration], RecordingRuntime(store))
    assert await dispatch(first, body) == text("counted")
    assert await dispatch(first, body) is None
    assert await dispatch(replica, body) is None
    assert runs == ["/count"]
    weird = message("/count", message_id="a id with spaces / and slashes")
    assert await dispatch(first, weird) == text("counted")
    assert await dispatch(first, weird) is None


@pytest.mark.anyio
async def test_a_sync_handler_runs_in_a_worker_thread_and_returns_its_reply(store: Store) -> None:
    integration = Integration("where")

    @integration.command("where")
    def where(message: RoomMessage) -> str:
        return threading.current_thread().name

    reply = await dispatch(Dispatcher([integration], RecordingRuntime(store)), message("/where"))
    assert reply is not None and str(reply["message"]).startswith("integration")


@pytest.mark.anyio
async def test_pattern_handlers_get_the_match(store: Store) -> None:
    integration = Integration("links")
    seen: list[tuple[str, str]] = []

    @integration.on_message(r"(?P<issue>INC[0-9]{7})")
    async def issue(message: RoomMessage) -> None:
        assert message.match is not None
        seen.append((message.match["issue"], message.args))
        await message.reply(f"Looking up {message.match['issue']}")

    dispatcher = Dispatcher([integration, _shouter()], RecordingRuntime(store))
    assert await dispatch(dispatcher, message("see INC0000042 please")) == text(
        "Looking up INC0000042"
    )
    assert await dispatch(dispatcher, message("/shout INC0000042")) == text("INC0000042")
    assert await dispatch(dispatcher, message("nothing to see")) is None
    assert seen == [("INC0000042", "see INC0000042 please")]


@pytest.mark.anyio
async def test_the_regex_form_of_a_command(store: Store) -> None:
    integration = Integration("echo")

    @integration.on_message(r"^/echo (?P<text>.+)")
    async def echo(message: RoomMessage) -> None:
        assert message.match is not None
        await message.reply(message.match["text"])

    reply = await dispatch(Dispatcher([integration], RecordingRuntime(store)), message("/echo hi"))
    assert reply == text("hi")


@pytest.mark.anyio
async def test_other_events_reach_their_handlers(store: Store) -> None:
    integration = Integration("greeter")

    @integration.on_event("room_enter")
    async def greet(event: RoomEvent) -> str | None:
        return f"Welcome, {event.sender.name}" if event.sender else None

    body: dict[str, object] = {
        "event": "room_enter",
        "item": {"room": {"id": "10"}, "sender": {"id": "7", "name": "Bob"}},
        "webhook_id": "abc",
    }
    dispatcher = Dispatcher([integration], RecordingRuntime(store))
    assert await dispatch(dispatcher, body) == text("Welcome, Bob")
    assert await dispatch(dispatcher, {**body, "event": "room_exit"}) is None


@pytest.mark.anyio
async def test_an_approval_required_escape_replies_with_the_link_for_the_sender(
    store: Store,
) -> None:
    integration = Integration("mine")

    @integration.command("mine")
    async def mine(message: RoomMessage) -> None:
        await message.user_client()

    runtime = RecordingRuntime(store)
    reply = await dispatch(Dispatcher([integration], runtime), message("/mine"))
    assert reply is not None and reply["color"] == "yellow"
    # Text, so that HipChat notifies the @mentioned sender and links the URL.
    assert reply["message_format"] == "text" and reply["notify"] is True
    text = str(reply["message"])
    assert text.startswith("@Blinky: ")
    assert "Only @Blinky should follow this link: https://hipchat.test/approve?state=abc " in text
    unnamed = message("/mine")
    sender = unnamed["item"]["message"]["from"]  # type: ignore[index]
    del sender["mention_name"]
    reply = await dispatch(Dispatcher([integration], runtime), unnamed)
    assert reply is not None and "Only Blinky the Fish should follow" in str(reply["message"])
    runtime.approval_url = None
    reply = await dispatch(Dispatcher([integration], runtime), message("/mine"))
    assert reply is not None and "ask an admin" in str(reply["message"])


@pytest.mark.anyio
async def test_a_handler_returning_something_else_fails(store: Store) -> None:
    integration = Integration("odd")

    @integration.command("odd")
    def odd(message: RoomMessage) -> str:
        return 42  # type: ignore[return-value]

    reply = await dispatch(Dispatcher([integration], RecordingRuntime(store)), message("/odd"))
    assert reply == text("/odd failed; the error is logged", color="red")


@pytest.mark.anyio
async def test_drain_cancels_what_still_runs_and_tells_the_room(store: Store) -> None:
    runtime = runtime_with(store, reply_window=0.01, command_timeout=60)
    integration = Integration("forever")

    @integration.command("forever")
    async def forever(message: RoomMessage) -> None:
        await asyncio.sleep(60)

    dispatcher = Dispatcher([integration], runtime)
    assert await dispatch(dispatcher, message("/forever")) is None
    await dispatcher.drain(0.05)
    assert runtime.messages() == ["/forever was stopped: the add-on is restarting"]
    with pytest.raises(ShuttingDown):  # new work is refused (503), not silently dropped
        await dispatch(dispatcher, message("/forever"))


@pytest.mark.anyio
async def test_storage_persists_across_dispatchers_on_one_store(store: Store) -> None:
    integration = Integration("notes")

    @integration.command("note")
    async def note(message: RoomMessage) -> str:
        key, _, value = message.args.partition(" ")
        if value:
            await message.storage.set(key, value)
        stored = await message.storage.get(key, "nothing")
        return str(stored)

    runtime = await installed(RecordingRuntime(store), "oauth-1", "oauth-2")
    assert await dispatch(Dispatcher([integration], runtime), message("/note a 1"))
    reply = await dispatch(Dispatcher([integration], RecordingRuntime(store)), message("/note a"))
    assert reply == text("1")
    other_installation = await Dispatcher([integration], RecordingRuntime(store)).handle(
        message("/note a"), installation(oauth_id="oauth-2"), request_id="req-2"
    )
    assert other_installation == text("nothing")


@pytest.mark.anyio
async def test_storage_operations(store: Store) -> None:
    integration = Integration("kv")
    results: list[object] = []

    @integration.command("kv")
    async def kv(message: RoomMessage) -> None:
        storage = message.storage
        await storage.set("a", {"n": [1, 2]})
        await storage.set("b", True)
        results.extend([await storage.all(), await storage.delete("a"), await storage.delete("a")])
        results.append(await storage.all())

    await dispatch(
        Dispatcher([integration], await installed(RecordingRuntime(store))), message("/kv")
    )
    assert results == [{"a": {"n": [1, 2]}, "b": True}, True, False, {"b": True}]


@pytest.mark.anyio
async def test_unknown_commands_run_nothing(store: Store) -> None:
    runtime = RecordingRuntime(store)
    dispatcher = Dispatcher([_shouter()], runtime)
    for body in (message("/nope"), message("/"), message("hello"), message("")):
        assert await dispatch(dispatcher, body) is None
    assert runtime.posted == [] and await store.scan(runtime.keys.prefix) == []


@pytest.mark.anyio
async def test_a_room_installation_replies_in_its_room_when_the_body_names_none(
    store: Store,
) -> None:
    body = message("/shout x")
    item = body["item"]
    assert isinstance(item, dict)
    del item["room"]
    reply = await dispatch(Dispatcher([_shouter()], RecordingRuntime(store)), body, room_id=77)
    assert reply == text("X")
    with pytest.raises(RequestError, match="no room"):
        await dispatch(Dispatcher([_shouter()], RecordingRuntime(store)), body)


@pytest.mark.anyio
async def test_malformed_bodies_are_request_errors(store: Store) -> None:
    dispatcher = Dispatcher([_shouter()], RecordingRuntime(store))
    with pytest.raises(RequestError, match="event"):
        await dispatch(dispatcher, {"item": {}})
    no_sender: dict[str, object] = {
        "event": "room_message",
        "item": {"message": {"message": "/shout"}, "room": {"id": 1}},
    }
    with pytest.raises(RequestError, match=r"from\.id"):
        await dispatch(dispatcher, no_sender)


def test_webhooks_are_parsed_leniently() -> None:
    hook = parse_webhook(
        {"event": "room_topic_change", "item": {"room": {"id": "12"}}, "webhook_id": "77"}
    )
    assert (hook.room and hook.room.id, hook.sender, hook.text) == (12, None, "")
    notification = parse_webhook(
        {"event": "room_notification", "item": {"message": {"from": "CI", "message": "ok"}}}
    )
    assert (notification.sender, notification.text, notification.room) == (None, "ok", None)


@dataclasses.dataclass
class UnreachableRuntime(RecordingRuntime):
    """A runtime whose REST notifications fail, as when HipChat is down."""

    async def post_notification(
        self, installation: Installation, room_id: int, notification: dict[str, object]
    ) -> None:
        raise HipChatAPIError(503, "POST", f"/v2/room/{room_id}/notification", "down")


@pytest.mark.anyio
async def test_a_room_that_cannot_be_told_is_only_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = UnreachableRuntime(store, settings=dataclasses.replace(SETTINGS, reply_window=0))
    integration = Integration("late")
    release = asyncio.Event()

    @integration.command("late")
    async def late(message: RoomMessage) -> None:
        await release.wait()
        await message.reply("too late")

    dispatcher = Dispatcher([integration], runtime)
    assert await dispatch(dispatcher, message("/late")) is None
    release.set()
    await dispatcher.drain()
    messages = [record.getMessage() for record in caplog.records]
    assert "/late failed" in messages
    assert any(m.startswith("Could not tell the room: HipChat answered 503") for m in messages)


@pytest.mark.anyio
async def test_storage_that_is_not_an_object_fails_the_handler(store: Store) -> None:
    runtime = RecordingRuntime(store)
    await store.put(runtime.keys.legacy_storage("oauth-1", "kv"), "[1, 2]")
    integration = Integration("kv")

    @integration.command("kv")
    async def kv(message: RoomMessage) -> str:
        return str(await message.storage.get("a"))

    reply = await dispatch(Dispatcher([integration], runtime), message("/kv"))
    assert reply == text("/kv failed; the error is logged", color="red")


@pytest.mark.anyio
async def test_a_hung_sync_integration_cannot_take_the_other_integrations_threads(
    store: Store,
) -> None:
    release = threading.Event()
    hog, calm = Integration("hog"), Integration("calm")

    @hog.command("hog")
    def block(message: RoomMessage) -> str:
        release.wait(10)
        return "released"

    @calm.command("calm")
    def answer(message: RoomMessage) -> str:
        return "still here"

    # A window of whole seconds: /calm answers inside it however loaded the machine, and each
    # /hog's timeout notice is its reply, so the timeouts have passed when /calm is sent.
    runtime = runtime_with(store, reply_window=5.0, command_timeout=0.2)
    dispatcher = Dispatcher([hog, calm], runtime, max_threads=4)
    try:
        hogs = [dispatch(dispatcher, message("/hog")) for _ in range(6)]
        timed_out = await asyncio.gather(*hogs)  # more than every thread: each hangs past it
        assert [r and r["message"] for r in timed_out] == ["/hog timed out after 0.2 s"] * 6
        reply = await dispatch(dispatcher, message("/calm"))
    finally:
        release.set()
        await dispatcher.drain(2)
    assert reply is not None and reply["message"] == "still here"


def _room_reporter(seen: list[tuple[int, str]]) -> Integration:
    integration = Integration("where", name="Where")

    @integration.command("where", help="Say the room and the sender")
    async def where(message: RoomMessage) -> None:
        seen.append((message.room.id, message.sender.id))
        await message.reply("here")

    return integration


def _signed(*, room_id: int | None = None, sender: str = "5") -> Signed:
    return Signed(sender_id=sender, room_id=room_id)


@pytest.mark.anyio
async def test_the_room_is_the_checked_item_room_never_a_roomid_fallback(store: Store) -> None:
    # A room installation in room 10: item.room.id (checked against the JWT) is 10, roomId names
    # room 99. The command runs in room 10 and its late replies go there too.
    seen: list[tuple[int, str]] = []
    runtime = RecordingRuntime(store)
    dispatcher = Dispatcher([_room_reporter(seen)], runtime)
    body = {**message("/where"), "roomId": 99}
    body["item"] = {**body["item"], "roomId": 99}  # type: ignore[dict-item]
    reply = await dispatcher.handle(body, installation(ROOM), request_id="r", signed=_signed())
    assert reply == text("here") and seen == [(ROOM, "5")]


@pytest.mark.anyio
async def test_a_roomid_alone_is_not_a_room(store: Store) -> None:
    dispatcher = Dispatcher([_room_reporter([])], RecordingRuntime(store))
    body = message("/where")
    body["item"] = {"message": body["item"]["message"], "roomId": 99}  # type: ignore[index]
    with pytest.raises(RequestError, match=r"item\.room\.id"):
        await dispatcher.handle(body, installation(None), request_id="r")
    # A signed webhook without item.room takes the JWT's context.room_id (checked too).
    seen: list[tuple[int, str]] = []
    dispatcher = Dispatcher([_room_reporter(seen)], RecordingRuntime(store))
    await dispatcher.handle(body, installation(None), request_id="r", signed=_signed(room_id=7))
    # A room installation: its own room, whatever roomId says.
    body["item"]["message"]["id"] = "another-message"  # type: ignore[index]
    await dispatcher.handle(body, installation(ROOM), request_id="r", signed=_signed())
    assert seen == [(7, "5"), (ROOM, "5")]


@pytest.mark.anyio
async def test_an_unsigned_body_for_another_room_of_a_room_installation_is_refused(
    store: Store,
) -> None:
    dispatcher = Dispatcher([_room_reporter([])], RecordingRuntime(store))
    with pytest.raises(RequestError, match="room 10 only"):
        await dispatch(dispatcher, message("/where", room=11), room_id=ROOM)


@pytest.mark.anyio
async def test_a_body_without_a_sender_takes_the_jwt_subject(store: Store) -> None:
    seen: list[tuple[int, str]] = []
    dispatcher = Dispatcher([_room_reporter(seen)], RecordingRuntime(store))
    body = message("/where")
    del body["item"]["message"]["from"]  # type: ignore[index]
    await dispatcher.handle(body, installation(), request_id="r", signed=_signed(sender="1001"))
    assert seen == [(ROOM, "1001")]


@pytest.mark.anyio
async def test_a_signed_redelivery_of_a_message_that_ran_answers_nothing(store: Store) -> None:
    # jti replay is refused before the dispatcher (addon.verification, tests/test_webhook_auth.py);
    # here a fresh JWT for a message id that already ran is a redelivery, answered with nothing.
    seen: list[tuple[int, str]] = []
    dispatcher = Dispatcher([_room_reporter(seen)], RecordingRuntime(store))
    first = message("/where", message_id="m-1")
    assert await dispatcher.handle(first, installation(), request_id="a", signed=_signed())
    assert await dispatcher.handle(first, installation(), request_id="c", signed=_signed()) is None
    assert len(seen) == 1


# -- the request's own task: no task, no future for a handler that ends in the window --------


class _TaskCount:
    """Counts the tasks the running loop creates (its task factory: a real hook, not a mock)."""

    def __init__(self) -> None:
        self.created = 0

    def __enter__(self) -> _TaskCount:
        loop = asyncio.get_running_loop()
        self._previous = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            self.created += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().set_task_factory(self._previous)


Sent = list[tuple[dict[str, object] | None, "asyncio.Task[Any] | None"]]


def _recorder(sent: Sent, then: asyncio.Event | None = None) -> Respond:
    """A ``respond`` that records each response and the task that sent it."""

    async def respond(reply: dict[str, object] | None) -> None:
        sent.append((reply, asyncio.current_task()))
        if then is not None:
            then.set()

    return respond


async def deliver(dispatcher: Dispatcher, body: dict[str, object], respond: Respond) -> None:
    """What the webhook route does once the message id is claimed."""
    hook = parse_webhook(body)
    await dispatcher.deliver(
        dispatcher.plan(hook), installation(), request_id="req-1", respond=respond
    )


@pytest.mark.anyio
async def test_a_command_ending_in_the_window_runs_in_the_requests_task_and_makes_no_task(
    store: Store,
) -> None:
    integration = Integration("where")
    handler_tasks: list[asyncio.Task[Any] | None] = []

    @integration.command("where")
    async def where(message: RoomMessage) -> None:
        handler_tasks.append(asyncio.current_task())
        await message.reply("here")
        await asyncio.sleep(0)  # it goes on after its reply: the response is already out

    runtime = RecordingRuntime(store)
    dispatcher = Dispatcher([integration], runtime)
    sent: Sent = []
    with _TaskCount() as tasks:
        await deliver(dispatcher, message("/where"), _recorder(sent))
    request = asyncio.current_task()
    assert handler_tasks == [request]
    assert sent == [(text("here"), request)]
    assert tasks.created == 0 and runtime.posted == []


@pytest.mark.anyio
async def test_a_command_outliving_the_window_is_answered_by_one_task_and_runs_on_in_place(
    store: Store,
) -> None:
    integration = Integration("slow")
    handler_tasks: list[asyncio.Task[Any] | None] = []
    answered = asyncio.Event()

    @integration.command("slow")
    async def slow(message: RoomMessage) -> None:
        handler_tasks.append(asyncio.current_task())
        await answered.wait()  # the window closes first; the response goes out without us
        await message.reply("late but here")

    runtime = runtime_with(store, reply_window=0.01)
    sent: Sent = []
    with _TaskCount() as tasks:
        await deliver(
            Dispatcher([integration], runtime), message("/slow"), _recorder(sent, answered)
        )
    request = asyncio.current_task()
    [(reply, sender)] = sent
    assert reply is None and sender is not request and handler_tasks == [request]
    assert tasks.created == 1  # the one that sent the response at the window
    assert runtime.messages() == ["late but here"]


@pytest.mark.anyio
async def test_a_timeout_the_handler_opens_after_the_window_cancels_only_the_handlers_work(
    store: Store,
) -> None:
    integration = Integration("patient")
    answered = asyncio.Event()

    @integration.command("patient")
    async def patient(message: RoomMessage) -> str:
        await answered.wait()
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(60)
        except TimeoutError:
            return "gave up waiting"
        return "never"

    runtime = runtime_with(store, reply_window=0.01, command_timeout=30.0)
    sent: Sent = []
    await deliver(
        Dispatcher([integration], runtime), message("/patient"), _recorder(sent, answered)
    )
    assert [reply for reply, _task in sent] == [None]
    assert runtime.messages() == ["gave up waiting"]
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


@pytest.mark.anyio
async def test_drain_stops_a_handler_in_the_requests_task_and_the_request_is_still_answered(
    store: Store,
) -> None:
    integration = Integration("forever")
    started = asyncio.Event()

    @integration.command("forever")
    async def forever(message: RoomMessage) -> None:
        started.set()
        await asyncio.sleep(60)

    runtime = runtime_with(store, reply_window=30.0)
    dispatcher = Dispatcher([integration], runtime)
    sent: Sent = []
    request = asyncio.get_running_loop().create_task(
        deliver(dispatcher, message("/forever"), _recorder(sent))
    )
    await started.wait()
    await dispatcher.drain(0)
    await request  # ends normally: the drain's cancel stayed inside the handler
    notice = text("/forever was stopped: the add-on is restarting", color="red")
    assert sent == [(notice, request)] and runtime.posted == []


@pytest.mark.anyio
async def test_several_handlers_answer_with_the_first_reply_whichever_task_makes_it(
    store: Store,
) -> None:
    integration = Integration("patterns")
    second_may_reply = asyncio.Event()

    @integration.on_message(r"\bhello\b")
    async def first(message: RoomMessage) -> None:
        await second_may_reply.wait()  # the request's task waits here; the other one replies

    @integration.on_message(r"\bworld\b")
    async def second(message: RoomMessage) -> None:
        await message.reply("world to you")
        second_may_reply.set()

    runtime = RecordingRuntime(store)
    sent: Sent = []
    await deliver(Dispatcher([integration], runtime), message("hello world"), _recorder(sent))
    assert [reply for reply, _task in sent] == [text("world to you")]
    assert runtime.posted == []


@pytest.mark.anyio
async def test_a_stop_while_the_request_waits_for_its_other_handlers_still_answers_it(
    store: Store,
) -> None:
    # Two pattern handlers: the first runs in the request's task, the second in its own. The
    # drain takes its tasks while the first still runs; when its grace is over the request's
    # task waits for the second one: both are stopped, and the request still gets its answer.
    integration = Integration("pair")
    first_started, first_may_end = asyncio.Event(), asyncio.Event()

    @integration.on_message(r"\bhello\b")
    async def first(message: RoomMessage) -> None:
        first_started.set()
        await first_may_end.wait()

    @integration.on_message(r"\bworld\b")
    async def second(message: RoomMessage) -> None:
        await asyncio.sleep(60)

    runtime = runtime_with(store, reply_window=30.0)
    dispatcher = Dispatcher([integration], runtime)
    sent: Sent = []
    request = asyncio.get_running_loop().create_task(
        deliver(dispatcher, message("hello world"), _recorder(sent))
    )
    await first_started.wait()
    draining = asyncio.get_running_loop().create_task(dispatcher.drain(0.2))
    await asyncio.sleep(0)  # the drain has taken its tasks, the request's among them
    first_may_end.set()
    await draining
    await request  # not cancelled: the stop was absorbed
    told = [reply for reply, _task in sent] + [body for _room, body in runtime.posted]
    notices = [
        t
        for t in told
        if t and str(t["message"]).endswith("second was stopped: the add-on is restarting")
    ]
    assert len(sent) == 1 and len(notices) == 1


@pytest.mark.anyio
async def test_a_reply_after_the_window_goes_out_after_the_webhooks_response(
    store: Store,
) -> None:
    # The window closes while the handler runs: a task sends the (empty) response. A reply the
    # handler makes while that send is still under way waits for it, so HipChat gets the
    # response first and then the notification, in the order they were made.
    integration = Integration("late")
    order: list[str] = []
    window_closed, response_may_finish = asyncio.Event(), asyncio.Event()

    @integration.command("late")
    async def late(message: RoomMessage) -> None:
        await window_closed.wait()
        await message.reply("after the window")
        order.append("reply posted")

    async def respond(reply: dict[str, object] | None) -> None:
        window_closed.set()
        await response_may_finish.wait()  # a slow client: the send takes a while
        order.append("response sent")

    runtime = runtime_with(store, reply_window=0.01)
    request = asyncio.get_running_loop().create_task(
        deliver(Dispatcher([integration], runtime), message("/late"), respond)
    )
    await window_closed.wait()
    for _ in range(5):
        await asyncio.sleep(0)  # the handler runs on; its reply must not overtake the response
    assert runtime.posted == []
    response_may_finish.set()
    await request
    assert order == ["response sent", "reply posted"]
    assert runtime.messages() == ["after the window"]


@pytest.mark.anyio
async def test_a_cancelled_future_the_handler_awaits_fails_only_its_command(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing stopped the handler: it awaited a future that something else cancelled. In the
    # request's own task that CancelledError must not reach the server (a 500, and the answer
    # lost): it is the handler's failure, told to the room like any other.
    integration = Integration("stray")

    @integration.command("stray")
    async def stray(message: RoomMessage) -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    runtime = RecordingRuntime(store)
    sent: Sent = []
    with caplog.at_level(logging.ERROR):
        await deliver(Dispatcher([integration], runtime), message("/stray"), _recorder(sent))
    assert [reply for reply, _task in sent] == [
        text("/stray failed; the error is logged", color="red")
    ]
    assert "/stray failed" in caplog.text
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
