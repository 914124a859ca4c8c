"""Seed compatibility: old ``run_integration`` scripts run unchanged, with the old arguments."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from addon.context import Storage
from addon.dispatch import Dispatcher
from addon.errors import ConfigError, IntegrationError
from addon.integrations import load_integrations
from addon.seed import (
    SeedItem,
    SeedMessage,
    SeedNotification,
    SeedRoom,
    SeedSender,
    StaticTokens,
    parse_static_tokens,
    seed_integration,
    seed_notification,
)
from addon.store import Keys, Store
from tests.test_webhooks import (
    ROOM,
    SETTINGS,
    RecordingRuntime,
    dispatch,
    installation,
    installed,
    message,
    runtime_with,
    text,
)


async def _runtime(store: Store, *tokens: str) -> RecordingRuntime:
    settings = dataclasses.replace(SETTINGS, static_tokens=tokens)
    return await installed(RecordingRuntime(store, settings=settings))


def test_static_tokens_are_parsed() -> None:
    tokens = parse_static_tokens(["weather:global-t", f"{ROOM}:weather:room-t", "jira:j-t"])
    assert tokens.token_for(ROOM, "weather") == "room-t"
    assert tokens.token_for(ROOM + 1, "weather") == "global-t"
    assert tokens.token_for(ROOM, "unknown") is None
    assert tokens.as_dict() == {
        "weather": "global-t",
        "jira": "j-t",
        f"{ROOM}:weather": "room-t",
    }
    assert repr(tokens) == "StaticTokens()"


@pytest.mark.parametrize("entry", ["no-colon", "a:b:c:d", "room:weather:sekrit", ":sekrit"])
def test_bad_static_tokens_are_refused_without_showing_them(entry: str) -> None:
    with pytest.raises(ConfigError, match="ADDON_TOKENS") as caught:
        parse_static_tokens([entry])
    assert "sekrit" not in str(caught.value)


def test_the_notification_has_the_old_shape() -> None:
    body = message("/weather paris", message_id="m-1")
    notification = seed_notification(body)
    assert notification == SeedNotification(
        event="room_message",
        item=SeedItem(
            message=SeedMessage(
                date="2015-01-20T22:45:06.662545+00:00",
                id="m-1",
                content="/weather paris",
                type="message",
                sender=SeedSender(
                    id=5, links=None, mention_name="Blinky", name="Blinky the Fish", version=None
                ),
            ),
            room=SeedRoom(
                id=ROOM,
                is_archived=None,
                links=None,
                name="The Weather Channel",
                privacy=None,
                version=None,
            ),
        ),
        oauth_client_id="oauth-1",
        web_hook=578829,
    )


def test_missing_fields_are_none() -> None:
    notification = seed_notification({"item": {"sender": {"id": "7", "links": {"self": "u"}}}})
    assert notification.event is None and notification.item.room.id is None
    assert (notification.item.message.sender.id, notification.item.message.content) == ("7", None)
    assert notification.item.message.sender.links == {"self": "u"}


def _two(notification: SeedNotification, query: str) -> str:
    return f"two got {query!r} from {notification.item.message.sender.name}"


def _three(notification: SeedNotification, query: str, all_tokens: dict[str, str]) -> str:
    return f"three sees {sorted(all_tokens)}"


def _six(
    notification: SeedNotification,
    query: str,
    all_tokens: dict[str, str],
    token: str,
    storage: dict[str, object],
    log: object,
) -> str:
    calls = storage.get("calls")
    storage["calls"] = (calls if isinstance(calls, int) else 0) + 1
    return f"six with {token} in {threading.current_thread().name[:11]}, call {storage['calls']}"


def _varargs(*args: object) -> str:
    return f"{len(args)} arguments"


def _silent(notification: SeedNotification, query: str) -> None:
    return None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("script", "reply"),
    [
        pytest.param(_two, "two got 'a b' from Blinky the Fish", id="2 arguments"),
        pytest.param(_three, "three sees ['10:old', 'old']", id="3 arguments"),
        pytest.param(_six, "six with room-token in integration, call 1", id="6 arguments"),
        pytest.param(_varargs, "6 arguments", id="*args"),
    ],
)
async def test_every_seed_form_runs(
    store: Store, script: Callable[..., object], reply: str
) -> None:
    runtime = await _runtime(store, "old:global-token", f"{ROOM}:old:room-token")
    dispatcher = Dispatcher([seed_integration("old", script)], runtime)
    assert await dispatch(dispatcher, message("/old a b")) == text(reply)
    assert runtime.token_requests == 0


@pytest.mark.anyio
async def test_the_token_falls_back_to_the_named_one_then_the_addon_token(store: Store) -> None:
    named = await _runtime(store, "old:global-token")
    reply = await dispatch(Dispatcher([seed_integration("old", _six)], named), message("/old"))
    assert reply is not None and "with global-token" in str(reply["message"])
    plain = await _runtime(store)
    reply = await dispatch(Dispatcher([seed_integration("old", _six)], plain), message("/old"))
    assert reply is not None and "with addon-token-of-oauth-1" in str(reply["message"])
    assert plain.token_requests == 1


@pytest.mark.anyio
async def test_seed_storage_persists_across_dispatchers(store: Store) -> None:
    replies = []
    for _ in range(2):
        dispatcher = Dispatcher([seed_integration("old", _six)], await _runtime(store))
        replies.append(await dispatch(dispatcher, message("/old")))
    assert [str(r and r["message"])[-6:] for r in replies] == ["call 1", "call 2"]


@pytest.mark.anyio
async def test_a_script_returning_nothing_replies_nothing(store: Store) -> None:
    dispatcher = Dispatcher([seed_integration("old", _silent)], await _runtime(store))
    assert await dispatch(dispatcher, message("/old")) is None


@pytest.mark.anyio
async def test_a_raising_script_is_isolated(store: Store) -> None:
    def broken(notification: SeedNotification, query: str) -> str:
        raise KeyError("oops")

    dispatcher = Dispatcher([seed_integration("old", broken)], await _runtime(store))
    assert await dispatch(dispatcher, message("/old")) == text(
        "/old failed; the error is logged", color="red"
    )


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(lambda notification: None, id="1 argument"),
        pytest.param(lambda notification, query, *, extra: None, id="keyword-only"),
        pytest.param(lambda a, b, c, d, e, f, g: None, id="7 required"),
    ],
)
def test_unusable_signatures_are_refused(script: Callable[..., object]) -> None:
    with pytest.raises(IntegrationError, match="run_integration must take"):
        seed_integration("old", script)


@pytest.mark.anyio
async def test_a_seed_module_is_loaded_and_owns_its_stem(tmp_path: Path, store: Store) -> None:
    (tmp_path / "Weather.py").write_text(
        '"""Tells the weather."""\n\n'
        "def run_integration(notification, query, all_tokens, token, storage, log):\n"
        "    log.info('asked for %s', query)\n"
        "    return 'sunny in ' + query\n"
    )
    [integration] = load_integrations(tmp_path)
    [command] = integration.commands.values()
    assert (command.name, command.usage, command.help) == (
        "weather",
        "/weather <query>",
        "Tells the weather.",
    )
    dispatcher = Dispatcher([integration], await _runtime(store, "Weather:w-token"))
    assert await dispatch(dispatcher, message("/weather Paris")) == text("sunny in Paris")


def test_static_tokens_default_to_none() -> None:
    assert StaticTokens().as_dict() == {}


def _counter(
    notification: SeedNotification,
    query: str,
    all_tokens: dict[str, str],
    token: str,
    storage: dict[str, object],
    log: object,
) -> str:
    count = storage.get("count")
    storage["count"] = (count if isinstance(count, int) else 0) + 1
    if query:
        storage["note"] = query
    return str(storage["count"])


def _counter_storage(store: Store, oauth_id: str) -> Storage:
    return Storage(store, Keys("test-addon"), oauth_id, "counter")


@pytest.mark.anyio
async def test_concurrent_seed_calls_lose_no_update(store: Store) -> None:
    runtime = await installed(runtime_with(store, reply_window=60, command_timeout=60))
    dispatcher = Dispatcher([seed_integration("counter", _counter)], runtime)
    replies = await asyncio.gather(*(dispatch(dispatcher, message("/counter")) for _ in range(40)))
    assert sorted(int(str(r and r["message"])) for r in replies) == list(range(1, 41))
    assert await _counter_storage(store, "oauth-1").all() == {"count": 40}


@pytest.mark.anyio
async def test_seed_storage_is_per_installation(store: Store) -> None:
    runtime = await installed(await _runtime(store), "oauth-1", "oauth-2")
    dispatcher = Dispatcher([seed_integration("counter", _counter)], runtime)
    await dispatch(dispatcher, message("/counter one"))
    await dispatch(dispatcher, message("/counter"))
    other = await dispatcher.handle(
        message("/counter two"), installation(oauth_id="oauth-2"), request_id="req-2"
    )
    assert other == text("1")
    assert await _counter_storage(store, "oauth-1").all() == {"count": 2, "note": "one"}
    assert await _counter_storage(store, "oauth-2").all() == {"count": 1, "note": "two"}
    assert not [key for key in await store.scan("") if ":global:" in key]


@pytest.mark.anyio
async def test_a_seed_write_past_the_quota_tells_the_room(store: Store) -> None:
    runtime = await installed(runtime_with(store))
    runtime.settings = dataclasses.replace(runtime.settings, storage_quota=1024)
    dispatcher = Dispatcher([seed_integration("counter", _counter)], runtime)
    assert await dispatch(dispatcher, message("/counter " + "x" * 2000)) == text(
        "/counter failed: The storage of counter in this installation would exceed 1024 bytes; "
        "delete some of its values first",
        color="red",
    )
    assert await dispatch(dispatcher, message("/counter")) == text("1")  # nothing was saved


@pytest.mark.anyio
async def test_a_seed_script_reads_storage_in_the_older_format(store: Store) -> None:
    runtime = await installed(await _runtime(store))
    await store.put(runtime.keys.legacy_storage("oauth-1", "counter"), '{"count": 41}')
    dispatcher = Dispatcher([seed_integration("counter", _counter)], runtime)
    assert await dispatch(dispatcher, message("/counter")) == text("42")
    assert await store.get(runtime.keys.legacy_storage("oauth-1", "counter")) is None
    assert await _counter_storage(store, "oauth-1").all() == {"count": 42}


@pytest.mark.anyio
async def test_a_seed_call_that_times_out_saves_nothing_and_frees_the_lock(store: Store) -> None:
    gate = threading.Event()

    def hang_or_count(
        notification: SeedNotification,
        query: str,
        all_tokens: dict[str, str],
        token: str,
        storage: dict[str, object],
        log: object,
    ) -> str:
        if query == "hang":
            gate.wait(10)
            storage["count"] = 99
            return "late"
        return _counter(notification, query, all_tokens, token, storage, log)

    runtime = await installed(runtime_with(store, command_timeout=0.5))
    dispatcher = Dispatcher([seed_integration("counter", hang_or_count)], runtime)
    try:
        hung = await dispatch(dispatcher, message("/counter hang"))
        assert hung == text("/counter timed out after 0.5 s", color="red")
        # The lock went with the cancelled call: this one does not wait for its TTL (10.5 s).
        assert await dispatch(dispatcher, message("/counter")) == text("1")
    finally:
        gate.set()
    assert await _counter_storage(store, "oauth-1").all() == {"count": 1}
