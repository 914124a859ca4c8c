"""The integration API: registration checks, the loader, the examples and ``/help``."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from addon.context import RoomEvent, RoomMessage, build_notification
from addon.descriptor import WebhookSpec
from addon.dispatch import Dispatcher
from addon.errors import IntegrationError
from addon.integrations import Integration, check_unique, help_integration, load_integrations
from addon.store import Store
from tests.test_webhooks import RecordingRuntime, dispatch, installed, message, text

EXAMPLES = Path(__file__).resolve().parents[1] / "integrations"


async def _handler(message: RoomMessage) -> None:
    """A handler that does nothing."""


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def test_decorators_return_the_function_unchanged() -> None:
    integration = Integration("demo")
    assert integration.command("demo")(_handler) is _handler
    assert integration.on_message(r"^hi")(_handler) is _handler

    async def on_enter(event: RoomEvent) -> None:
        """Does nothing."""

    assert integration.on_event("room_enter")(on_enter) is on_enter


@pytest.mark.parametrize(
    ("register", "error", "reason"),
    [
        pytest.param(
            lambda i: i.on_message(r"(unclosed")(_handler),
            IntegrationError,
            r"Integration 'demo', handler '_handler': pattern '\(unclosed' does not compile",
            id="bad regex",
        ),
        pytest.param(
            lambda i: i.on_event("room_dance")(_handler),
            IntegrationError,
            "Integration 'demo', handler '_handler': event 'room_dance' is not one of",
            id="unknown event",
        ),
        pytest.param(
            lambda i: i.on_event("room_message")(_handler),
            IntegrationError,
            "use command",
            id="room_message as an event",
        ),
        pytest.param(
            lambda i: i.command("Echo")(_handler),
            IntegrationError,
            "Integration 'demo', handler '/Echo': command name 'Echo' is invalid",
            id="uppercase command",
        ),
        pytest.param(
            lambda i: i.command("../etc")(_handler),
            IntegrationError,
            "invalid",
            id="path as command",
        ),
        pytest.param(
            lambda i: i.command("x" * 41)(_handler), IntegrationError, "invalid", id="too long"
        ),
        pytest.param(
            lambda i: [i.command("x")(_handler), i.command("x")(_handler)],
            IntegrationError,
            "/x is registered twice",
            id="duplicate command",
        ),
        pytest.param(
            lambda i: i.command(7)(_handler), TypeError, "command name must be a str", id="int"
        ),
        pytest.param(
            lambda i: i.on_message(re.compile("x"))(_handler),
            TypeError,
            "pattern must be a str",
            id="compiled pattern",
        ),
        pytest.param(
            lambda i: i.command("x")("not a function"),
            TypeError,
            "must decorate a function",
            id="not a function",
        ),
        pytest.param(
            lambda i: i.command("x")(lambda message, extra: None),
            TypeError,
            "exactly one argument",
            id="two arguments",
        ),
    ],
)
def test_registration_is_checked_at_import_time(
    register: Callable[[Integration], object], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        register(Integration("demo"))


@pytest.mark.parametrize(
    ("kwargs", "error", "reason"),
    [
        pytest.param({"key": "has space"}, IntegrationError, "key 'has space'", id="bad key"),
        pytest.param(
            {"key": "demo", "scopes": ["send_notification", "read_minds"]},
            IntegrationError,
            "Integration 'demo': unknown scope 'read_minds'",
            id="unknown scope",
        ),
        pytest.param(
            {"key": "demo", "scopes": "send_notification"}, TypeError, "not one string", id="str"
        ),
    ],
)
def test_integrations_are_checked(
    kwargs: dict[str, object], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        Integration(**kwargs)  # type: ignore[arg-type]


def test_webhooks_declare_commands_patterns_and_events() -> None:
    integration = Integration("demo", name="Demo")
    integration.command("b-2")(_handler)
    integration.command("a")(_handler)
    integration.on_message(r"(?P<issue>INC\d+)")(_handler)

    async def on_event(event: RoomEvent) -> None:
        """Does nothing."""

    integration.on_event("room_enter")(on_event)
    integration.on_event("room_enter")(on_event)
    integration.on_event("room_topic_change")(on_event)
    assert integration.webhooks() == [
        WebhookSpec("room_message", r"(?i)^/(?:a|b\-2)(?:\s|$)", "Demo"),
        WebhookSpec("room_message", r"(?P<issue>INC\d+)", "Demo"),
        WebhookSpec("room_enter", None, "Demo"),
        WebhookSpec("room_topic_change", None, "Demo"),
    ]
    command_pattern = integration.webhooks()[0].pattern
    assert command_pattern is not None
    assert [bool(re.search(command_pattern, t)) for t in ("/A x", "/b-2", "/ab", "x /a")] == [
        True,
        True,
        False,
        False,
    ]
    assert integration.scopes == ("send_notification",)


def test_notifications_are_checked() -> None:
    assert build_notification("x" * 10_001)["message"] == "x" * 10_000
    with pytest.raises(ValueError, match="color"):
        build_notification("hi", color="blue")
    with pytest.raises(ValueError, match="non-empty"):
        build_notification("")


def test_the_loader_imports_every_valid_module(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "hello.py",
        """
        from addon.integrations import Integration, RoomMessage

        integration = Integration("hello")

        @integration.command("hello")
        async def hello(message: RoomMessage) -> None:
            await message.reply("hello")
        """,
    )
    _write(tmp_path, "legacy.py", "def run_integration(notification, query):\n    return query\n")
    _write(tmp_path, "_private.py", "raise SystemExit('never imported')\n")
    _write(tmp_path, "not-an-identifier.py", "raise SystemExit('never imported')\n")
    _write(tmp_path, "notes.txt", "not python")
    loaded = load_integrations(tmp_path)
    assert [(i.key, sorted(i.commands)) for i in loaded] == [
        ("hello", ["hello"]),
        ("legacy", ["legacy"]),
    ]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param(
            "x = 1\n",
            "bad.py has no 'integration' attribute (expected addon.Integration)",
            id="nothing exported",
        ),
        pytest.param(
            "integration = {'key': 'bad'}\n",
            "bad.py has a dict named 'integration' (expected addon.Integration)",
            id="wrong type",
        ),
        pytest.param(
            "raise RuntimeError('no config')\n",
            "bad.py failed to import: RuntimeError: no config",
            id="raises on import",
        ),
        pytest.param("def broken(:\n", "bad.py failed to import: SyntaxError", id="syntax error"),
        pytest.param(
            "def run_integration(notification):\n    pass\n",
            "bad.py: run_integration must take",
            id="seed with one argument",
        ),
    ],
)
def test_the_loader_names_the_bad_file(tmp_path: Path, source: str, reason: str) -> None:
    _write(tmp_path, "bad.py", source)
    with pytest.raises(IntegrationError, match=re.escape(f"{tmp_path.name}/{reason}")):
        load_integrations(tmp_path)


def test_two_integrations_cannot_own_one_command(tmp_path: Path) -> None:
    for stem in ("first", "second"):
        _write(
            tmp_path,
            f"{stem}.py",
            f"""
            from addon.integrations import Integration, RoomMessage

            integration = Integration("{stem}")

            @integration.command("same")
            def same(message: RoomMessage) -> str:
                return "{stem}"
            """,
        )
    with pytest.raises(IntegrationError, match="/same is owned by both 'first' and 'second'"):
        load_integrations(tmp_path)


def test_keys_must_be_unique_too() -> None:
    with pytest.raises(IntegrationError, match="key 'twin'"):
        check_unique([Integration("twin"), Integration("twin")])


def test_a_missing_directory_is_an_integration_error(tmp_path: Path) -> None:
    with pytest.raises(IntegrationError, match="ADDON_INTEGRATIONS_PATH"):
        load_integrations(tmp_path / "nowhere")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "command", ["/../../etc/passwd", "/os", "/sys", "/__init__", "/echo.py", "/ECHO/../card"]
)
async def test_nothing_in_a_message_picks_a_file(store: Store, command: str) -> None:
    runtime = RecordingRuntime(store)
    dispatcher = Dispatcher(load_integrations(EXAMPLES), runtime)
    assert await dispatch(dispatcher, message(command)) is None
    assert runtime.posted == []


@pytest.mark.anyio
async def test_help_lists_every_command_with_usage_and_help(store: Store) -> None:
    examples = load_integrations(EXAMPLES)
    integrations = [*examples, help_integration(examples)]
    reply = await dispatch(Dispatcher(integrations, RecordingRuntime(store)), message("/help"))
    assert reply is not None
    lines = str(reply["message"]).splitlines()
    assert lines == sorted(lines)
    assert "/echo <text> - Repeat the text" in lines
    assert "/help - List the commands" in lines
    usages = [line.split(" ")[0] for line in lines]
    assert usages == sorted(f"/{c}" for i in integrations for c in i.commands)


@pytest.mark.anyio
async def test_the_examples_work(store: Store) -> None:
    runtime = await installed(RecordingRuntime(store))  # storage is written only while installed
    dispatcher = Dispatcher(load_integrations(EXAMPLES), runtime)
    assert await dispatch(dispatcher, message("/echo  <b>hi</b> there")) == text("<b>hi</b> there")
    assert await dispatch(dispatcher, message("/remember colour blue-green")) == text(
        "Remembered colour."
    )
    assert await dispatch(dispatcher, message("/recall colour")) == text("colour: blue-green")
    assert await dispatch(dispatcher, message("/forget colour")) == text("Forgot colour.")
    assert await dispatch(dispatcher, message("/recall colour")) == text("Nothing under 'colour'.")
    card = await dispatch(dispatcher, message("/card Release <1.0>"))
    assert card is not None and card["message_format"] == "html"
    assert isinstance(card["card"], dict) and card["card"]["title"] == "Release <1.0>"
    assert "&lt;1.0&gt;" in str(card["message"])
    ping = await dispatch(dispatcher, message("/ping hello"))
    assert ping == text("pong: hello (for Blinky the Fish, ping #1)")
