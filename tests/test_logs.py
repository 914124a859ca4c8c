"""Logs are JSON lines (or one readable line on a terminal) and never carry a credential."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from pathlib import Path

import pytest

from addon.logs import (
    AccessPathFilter,
    configure_logging,
    logging_config,
    redact,
    resolve_format,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhYmMifQ.c2lnbmF0dXJlLXZhbHVl"


def test_redact_masks_jwts_bearers_and_token_parameters() -> None:
    text = redact(
        f"Authorization: JWT {JWT} Bearer abcdefghijkl "
        "GET /x?signed_request=zzz&access_token=yyy oauthSecret=s3cretvalue"
    )
    for secret in (JWT, "abcdefghijkl", "zzz", "yyy", "s3cretvalue"):
        assert secret not in text


def test_records_are_json_lines_with_context() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", stream=stream)
    try:
        logging.getLogger("addon.test").info(
            "installed with %s", f"Bearer {JWT}", extra={"oauth_id": "abc", "room_id": 4}
        )
    finally:
        root.handlers[:], root.level = handlers, level
    entry = json.loads(stream.getvalue())
    assert entry["oauth_id"] == "abc" and entry["room_id"] == 4
    assert entry["level"] == "INFO" and entry["logger"] == "addon.test"
    assert JWT not in stream.getvalue()


def test_uvicorns_access_records_carry_no_commands_secret() -> None:
    # uvicorn's access logger formats '%s - "%s %s HTTP/%s" %d' with the path as an argument.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/commands/s3cret-value-123456?x=1", "1.1", 200),
        None,
    )
    assert AccessPathFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /commands/[redacted]?x=1 HTTP/1.1" 200'
    assert redact("POST /commands/s3cret-value-123456 done") == "POST /commands/[redacted] done"
    assert redact("POST /commands 200") == "POST /commands 200"


def test_configure_logging_puts_the_filter_on_uvicorns_access_logger() -> None:
    root = logging.getLogger()
    access = logging.getLogger("uvicorn.access")
    handlers, level, filters = root.handlers[:], root.level, access.filters[:]
    try:
        configure_logging("INFO", stream=io.StringIO())
        configure_logging("INFO", stream=io.StringIO())
        assert sum(isinstance(f, AccessPathFilter) for f in access.filters) == 1
    finally:
        root.handlers[:], root.level, access.filters[:] = handlers, level, filters


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _log_through(stream: io.StringIO, log_format: str, *, exc: bool = False) -> str:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", stream=stream, log_format=log_format)
    try:
        logger = logging.getLogger("addon.test")
        if exc:
            try:
                raise RuntimeError(f"boom JWT {JWT}")
            except RuntimeError:
                logger.exception("failed", extra={"room_id": 4})
        else:
            logger.info("installed with %s", f"Bearer {JWT}", extra={"oauth_id": "abc"})
    finally:
        root.handlers[:], root.level = handlers, level
    return stream.getvalue()


def test_a_terminal_gets_one_readable_line_per_record() -> None:
    line = _log_through(_Terminal(), "auto")
    assert not line.startswith("{") and line.count("\n") == 1
    assert " INFO    addon.test: installed with Bearer [jwt]  oauth_id=abc" in line
    assert JWT not in line


def test_anything_but_a_terminal_gets_json() -> None:
    assert json.loads(_log_through(io.StringIO(), "auto"))["oauth_id"] == "abc"


def test_log_format_forces_either() -> None:
    assert json.loads(_log_through(_Terminal(), "json"))["level"] == "INFO"
    assert not _log_through(io.StringIO(), "text").startswith("{")


def test_text_tracebacks_are_redacted_too() -> None:
    text = _log_through(_Terminal(), "text", exc=True)
    assert "room_id=4" in text and "RuntimeError: boom JWT [jwt]" in text
    assert JWT not in text


def test_resolve_format() -> None:
    assert resolve_format("auto", _Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", None) == "json"  # a log file
    assert resolve_format("text", None) == "text"


@pytest.mark.parametrize(("log_format", "is_json"), [("json", True), ("text", False)])
def test_logging_config_writes_the_file_in_its_format(
    tmp_path: Path, log_format: str, is_json: bool
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logfile = tmp_path / "addon.log"
    logging.config.dictConfig(logging_config("WARNING", log_format, logfile=str(logfile)))
    try:
        logging.getLogger("uvicorn.error").warning("token %s", f"access_token={JWT}")
        logging.getLogger("addon.test").info("below the level")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = handlers, level
    [line] = logfile.read_text().splitlines()
    assert JWT not in line
    if is_json:
        assert json.loads(line)["logger"] == "uvicorn.error"
    else:
        assert " WARNING uvicorn.error: token access_token=[redacted]" in line
