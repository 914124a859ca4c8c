"""Logs are JSON lines and never carry a credential."""

from __future__ import annotations

import io
import json
import logging

from addon.logs import configure_logging, redact

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
