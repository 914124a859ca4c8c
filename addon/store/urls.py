"""Store URLs, parsed in one place: which backend, where, and how to authenticate.

- ``sqlite:///path``: the embedded store;
- ``redis://[user:password@]host:port[/db]``, ``rediss://…`` (TLS), ``unix:///path.sock``: one
  Redis (redis-py parses these itself);
- ``redis+sentinel://[user:password@]host:port[,host:port…]/service_name[/db]``: Redis Sentinel,
  every command on the service's current master;
- ``redis+cluster://[user:password@]host:port[,host:port…]``: Redis Cluster;
- ``rediss+sentinel://`` and ``rediss+cluster://``: the same over TLS.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

from addon.errors import ConfigError

__all__ = ["RedisURL", "mask_password", "parse_redis_url"]

Mode = Literal["single", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORTS: dict[Mode, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_FORMS: dict[Mode, str] = {
    "single": "redis://[:password@]host:port/db",
    "sentinel": "redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]",
    "cluster": "redis+cluster://[:password@]host:port[,host:port…]",
}
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PASSWORD_PARAM = re.compile(r"(^|&)(password=)[^&]*", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class RedisURL:
    """A parsed Redis store URL. ``url`` is the original (for ``single``, redis-py reads it)."""

    mode: Mode
    url: str = dataclasses.field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    is_tls: bool = False
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def masked(self) -> str:
        """The URL with its password replaced by ``***``."""
        return mask_password(self.url)

    @property
    def where(self) -> str:
        """Where the store is, for error messages: ``host:port,…`` and the service."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.mode == "sentinel":
            return f"Sentinel service {self.service!r} via {hosts}"
        return f"Redis Cluster at {hosts}" if self.mode == "cluster" else hosts


def parse_redis_url(url: str) -> RedisURL:
    """Parse a Redis store URL; raise ``ConfigError`` naming the expected form when it is bad."""
    scheme, colon, _ = url.partition(":")
    mode_and_tls = _SCHEMES.get(scheme.lower()) if colon else None
    if mode_and_tls is None:
        raise ConfigError(
            f"Store URL {mask_password(url)!r} has no Redis scheme; use redis://, rediss://, "
            "unix://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    mode, is_tls = mode_and_tls
    if mode == "single":
        return RedisURL(mode, url, is_tls=is_tls)
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    if parts.query or parts.fragment:
        _fail(url, mode, "takes no ?query or #fragment")
    nodes = tuple(_node(url, mode, host) for host in hosts.split(","))
    service, db = _path(url, mode, parts.path)
    return RedisURL(
        mode,
        url,
        nodes=nodes,
        service=service,
        db=db,
        is_tls=is_tls,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def _node(url: str, mode: Mode, text: str) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host:
        _fail(url, mode, f"has a bad host:port {text!r}")
    return host, port or _DEFAULT_PORTS[mode]


def _path(url: str, mode: Mode, path: str) -> tuple[str, int]:
    """The service name and database number in the path of a Sentinel or Cluster URL."""
    segments = [segment for segment in path.split("/") if segment]
    if mode == "cluster":
        if segments not in ([], ["0"]):
            _fail(url, mode, "names a database; a Redis Cluster has database 0 only")
        return "", 0
    if not segments or len(segments) > 2 or not _SERVICE.fullmatch(segments[0]):
        _fail(url, mode, "names no service (the name in `sentinel monitor <name> …`)")
    if len(segments) == 2 and not segments[1].isdigit():
        _fail(url, mode, f"has a database {segments[1]!r} that is not a number")
    return segments[0], int(segments[1]) if len(segments) == 2 else 0


def _fail(url: str, mode: Mode, problem: str) -> NoReturn:
    raise ConfigError(f"Store URL {mask_password(url)!r} {problem}; expected {_FORMS[mode]}")


def mask_password(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, _PASSWORD_PARAM.sub(r"\1\2***", parts.query)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))
