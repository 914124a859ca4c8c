"""Structured (JSON lines) logging that never prints a secret.

Our own code never passes secrets to the logger; ``RedactingFilter`` is the second line of defence
for what third-party libraries or integrations might log: JWTs, bearer/basic credentials and
token-like query parameters are masked before a record is formatted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, TextIO

__all__ = ["AccessPathFilter", "JsonFormatter", "RedactingFilter", "configure_logging", "redact"]

_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # a JWT
    re.compile(r"(?i)\b(bearer|basic|jwt)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)\b(auth_token|access_token|refresh_token|signed_request|oauthSecret|code|state)"
        r"([=:]\s*\"?)[^&\s\"]+"
    ),
    re.compile(r"(/commands/)[^/?#\s\"]+"),  # the deprecated POST /commands/<secret>
)
_CONTEXT = ("oauth_id", "room_id", "request_id", "integration", "event", "status", "path")


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential masked."""
    text = _PATTERNS[0].sub("[jwt]", text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _PATTERNS[3].sub(r"\1[redacted]", text)
    return _PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


class AccessPathFilter(logging.Filter):
    """Masks secrets in the path of uvicorn's access log records (``POST /commands/<secret>``).

    uvicorn logs ``(client, method, path, http_version, status)`` as arguments; the path is
    rewritten in place, so every handler, ours or uvicorn's own, sees it masked.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and our context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in _CONTEXT:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(
    level: str, *, stream: TextIO | None = None, logfile: str | None = None
) -> None:
    """Send every log record through the redacting JSON formatter (stderr, or ``logfile``)."""
    handler: logging.Handler = (
        logging.FileHandler(logfile, encoding="utf-8")
        if logfile
        else logging.StreamHandler(stream or sys.stderr)
    )
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessPathFilter) for f in access.filters):
        access.addFilter(AccessPathFilter())
