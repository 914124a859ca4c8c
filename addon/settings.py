"""Settings, read once from the environment.

``Settings.from_environ(os.environ)`` is the only place the add-on reads environment variables.
Every value is checked there: a bad one raises ``ConfigError`` with one sentence naming the
variable and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from addon.errors import ConfigError

__all__ = ["Secret", "Settings", "settings_from_process"]

DEFAULT_HIPCHAT_HOSTS = ("api.hipchat.com", "www.hipchat.com")
_REDIS_SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "rediss+sentinel://",
    "redis+cluster://",
    "rediss+cluster://",
)
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    value: str = dataclasses.field(repr=False)

    def __str__(self) -> str:
        return "**********"

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the add-on is configured with. Build it with ``Settings.from_environ``."""

    base_url: str = "http://localhost:8000"
    store_url: str = "sqlite:///addon.db"
    store_password: Secret | None = None
    hipchat_hosts: tuple[str, ...] = DEFAULT_HIPCHAT_HOSTS
    integrations_path: Path = Path("integrations")
    capabilities_path: Path = Path("capabilities")
    install_flow: str = "server"
    admin_token: Secret | None = None
    secret_key: Secret | None = None
    static_tokens: tuple[str, ...] = ()
    commands_secret: Secret | None = None
    jwt_leeway: float = 10.0
    reply_window: float = 2.0
    command_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    http_timeout: float = 10.0
    read_timeout: float = 10.0
    max_document_bytes: int = 256 * 1024
    storage_quota: int = 1 << 20  # bytes of one integration's storage in one installation
    log_level: str = "INFO"
    log_format: str = "auto"
    storage_files_path: Path = Path("storage-files")
    # prometheus-client's own variable: set, every worker process writes its metrics there.
    metrics_dir: Path | None = None

    @property
    def any_host_allowed(self) -> bool:
        """True when ``ADDON_HIPCHAT_HOSTS`` is ``*`` (development only)."""
        return "*" in self.hipchat_hosts

    def url_for(self, path: str) -> str:
        """The public URL of ``path`` (which starts with ``/``)."""
        return self.base_url + path

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate every ``ADDON_*`` variable; raise ``ConfigError`` on a bad value.

        An empty variable counts as unset, except ``ADDON_BASE_URL`` (empty is refused).
        """
        defaults = cls()
        return cls(
            base_url=_base_url(env.get("ADDON_BASE_URL", defaults.base_url)),
            store_url=_store_url(env.get("ADDON_STORE_URL") or defaults.store_url),
            store_password=_secret(env, "ADDON_STORE_PASSWORD", min_length=1),
            hipchat_hosts=_hosts(env.get("ADDON_HIPCHAT_HOSTS") or None),
            integrations_path=Path(env.get("ADDON_INTEGRATIONS_PATH") or "integrations"),
            capabilities_path=Path(env.get("ADDON_CAPABILITIES_PATH") or "capabilities"),
            install_flow=_choice(env, "ADDON_INSTALL_FLOW", ("server", "client"), "server"),
            admin_token=_secret(env, "ADDON_ADMIN_TOKEN", min_length=16),
            secret_key=_secret(env, "ADDON_SECRET_KEY", min_length=16),
            static_tokens=_token_list(env.get("ADDON_TOKENS", "")),
            commands_secret=_secret(env, "ADDON_COMMANDS_SECRET", min_length=16),
            jwt_leeway=_number(env, "ADDON_JWT_LEEWAY", float, defaults.jwt_leeway, 0, 300),
            reply_window=_number(env, "ADDON_REPLY_WINDOW", float, defaults.reply_window, 0, 9),
            command_timeout=_number(
                env, "ADDON_COMMAND_TIMEOUT", float, defaults.command_timeout, 0.1, 3600
            ),
            shutdown_timeout=_number(
                env, "ADDON_SHUTDOWN_TIMEOUT", float, defaults.shutdown_timeout, 0, 600
            ),
            # At most 25 s: a token refresh must finish inside the 30 s store lock that makes it
            # single-flight, or another replica could spend the same refresh token.
            http_timeout=_number(env, "ADDON_HTTP_TIMEOUT", float, defaults.http_timeout, 0.1, 25),
            read_timeout=_number(env, "ADDON_READ_TIMEOUT", float, defaults.read_timeout, 0.1, 300),
            max_document_bytes=_number(
                env, "ADDON_MAX_DOCUMENT_BYTES", int, defaults.max_document_bytes, 1024, 16 << 20
            ),
            storage_quota=_number(
                env, "ADDON_STORAGE_QUOTA", int, defaults.storage_quota, 1024, 1 << 30
            ),
            log_level=_choice(
                env, "ADDON_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
            ),
            log_format=_choice(env, "ADDON_LOG_FORMAT", ("auto", "json", "text"), "auto"),
            storage_files_path=Path(env.get("ADDON_STORAGE_FILES_PATH") or "storage-files"),
            metrics_dir=Path(env["PROMETHEUS_MULTIPROC_DIR"])
            if env.get("PROMETHEUS_MULTIPROC_DIR")
            else None,
        )


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"ADDON_BASE_URL {value!r} is not an http(s) URL; "
            "set it to the public address HipChat reaches, e.g. https://addon.example.com"
        )
    return value.rstrip("/")


def _store_url(value: str) -> str:
    # The scheme only: the store parses the rest (addon/store/urls.py) when it opens.
    if value.startswith(_REDIS_SCHEMES):
        return value
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    raise ConfigError(
        f"ADDON_STORE_URL {value!r} is not supported; use redis://host:6379/0, rediss://..., "
        "redis+sentinel://host:26379/mymaster, redis+cluster://host:6379 "
        "or sqlite:///path/to/addon.db"
    )


def _hosts(value: str | None) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_HIPCHAT_HOSTS
    hosts = tuple(h.strip().lower() for h in value.split(",") if h.strip())
    for host in hosts:
        if host != "*" and ("/" in host or "@" in host or not urlsplit(f"//{host}").hostname):
            raise ConfigError(
                f"ADDON_HIPCHAT_HOSTS entry {host!r} is not a host[:port]; "
                "list bare hosts such as api.hipchat.com,hipchat.example.com:8443"
            )
    if not hosts:
        raise ConfigError("ADDON_HIPCHAT_HOSTS is empty; list at least one host, or unset it")
    return hosts


def _choice(
    env: Mapping[str, str],
    name: str,
    allowed: tuple[str, ...],
    default: str,
    *,
    upper: bool = False,
) -> str:
    value = env.get(name) or default
    value = value.upper() if upper else value.lower()
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}; pick one of those")
    return value


def _secret(env: Mapping[str, str], name: str, *, min_length: int) -> Secret | None:
    value = env.get(name)
    if not value:
        return None
    if len(value) < min_length:
        raise ConfigError(
            f"{name} is shorter than {min_length} characters; use a longer random value"
        )
    return Secret(value)


def _number(
    env: Mapping[str, str],
    name: str,
    kind: Callable[[str], _T],
    default: _T,
    low: float,
    high: float,
) -> _T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if not isinstance(value, int | float) or math.isnan(value) or not low <= value <= high:
        raise ConfigError(
            f"{name} {raw!r} is not a number from {low:g} to {high:g}; fix or unset it"
        )
    return value


def _token_list(value: str) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    for entry in entries:
        if entry.count(":") not in (1, 2) or any(not part for part in entry.split(":")):
            raise ConfigError(
                "ADDON_TOKENS has an entry that is neither NAME:TOKEN nor "
                "ROOM_ID:INTEGRATION:TOKEN; "
                "fix the entry (the value is not shown because it holds a token)"
            )
    return entries


def settings_from_process() -> Settings:
    """``Settings.from_environ`` over this process's environment (the CLI and uvicorn workers)."""
    import os

    return Settings.from_environ(os.environ)
