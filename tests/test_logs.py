"""Logs are JSON lines (or one readable line on a terminal) and never carry a credential."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from pathlib import Path

import pytest

from addon.logs import configure_logging, logging_config, redact, resolve_format

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
