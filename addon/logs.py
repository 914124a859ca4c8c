"""Logging that never prints a secret: JSON lines for machines, one readable line for people.

``ADDON_LOG_FORMAT`` picks the format: ``json``, ``text``, or ``auto`` (the default: text when the
logs go to a terminal, JSON otherwise). ``logging_config`` is a ``logging.config.dictConfig``
dictionary, so uvicorn can apply the same configuration in every worker process it spawns.

Our own code never passes secrets to the logger; ``RedactingFilter`` is the second line of defence
for what third-party libraries or integrations might log: JWTs, bearer/basic credentials and
token-like query parameters are masked before a record is formatted.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
from typing import Any, TextIO

__all__ = [
    "AccessPathFilter",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "logging_config",
    "redact",
    "resolve_format",
]

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


class TextFormatter(logging.Formatter):
    """One readable line: time, level, logger, message, then the context fields as ``k=v``."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
            f"{redact(record.getMessage())}"
        )
        fields = [f"{name}={getattr(record, name)}" for name in _CONTEXT if hasattr(record, name)]
        if fields:
            line += "  " + " ".join(fields)
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def resolve_format(log_format: str, stream: TextIO | None) -> str:
    """``json`` or ``text``: ``auto`` means text on a terminal, JSON anywhere else (files too)."""
    if log_format != "auto":
        return log_format
    return "text" if stream is not None and stream.isatty() else "json"


def logging_config(level: str, log_format: str, *, logfile: str | None = None) -> dict[str, Any]:
    """A ``dictConfig`` dictionary: every record through the redacting ``log_format`` formatter.

    The logs go to ``logfile`` when given, else to stderr. Give the dictionary to uvicorn as
    ``log_config``: it applies it in each worker process, so ``--workers N`` logs like one.
    """
    formatter = "addon.logs.TextFormatter" if log_format == "text" else "addon.logs.JsonFormatter"
    handler: dict[str, Any] = (
        {"class": "logging.FileHandler", "filename": logfile, "encoding": "utf-8"}
        if logfile
        else {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": "addon.logs.RedactingFilter"},
            "access_path": {"()": "addon.logs.AccessPathFilter"},
        },
        "formatters": {"addon": {"()": formatter}},
        "handlers": {"addon": {**handler, "formatter": "addon", "filters": ["redact"]}},
        "root": {"level": level, "handlers": ["addon"]},
        "loggers": {
            name: {
                "handlers": [],
                "propagate": True,
                "filters": ["access_path"] if name == "uvicorn.access" else [],
            }
            for name in _UVICORN_LOGGERS
        },
    }


def configure_logging(
    level: str,
    *,
    stream: TextIO | None = None,
    logfile: str | None = None,
    log_format: str = "json",
) -> None:
    """Send every log record through the redacting formatter (to ``stream``, stderr or ``logfile``).

    ``log_format`` is ``json``, ``text`` or ``auto`` (text when the stream is a terminal).
    """
    target = stream or sys.stderr
    kind = resolve_format(log_format, None if logfile else target)
    handler: logging.Handler = (
        logging.FileHandler(logfile, encoding="utf-8") if logfile else logging.StreamHandler(target)
    )
    handler.setFormatter(TextFormatter() if kind == "text" else JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessPathFilter) for f in access.filters):
        access.addFilter(AccessPathFilter())
