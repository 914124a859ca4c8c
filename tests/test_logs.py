"""Logs are JSON lines and never carry a credential."""

from __future__ import annotations

import io
import json
import logging

from addon.logs import AccessPathFilter, configure_logging, redact

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
