"""The allow-list for every URL HipChat hands us (``ADDON_HIPCHAT_HOSTS``).

A URL passes when its scheme is http(s), it carries no user info, and its host is listed (an
entry without a port allows any port). ``*`` allows any host name, but an IP literal in a private,
loopback, link-local or otherwise special range, and ``localhost``, pass only when listed
explicitly: HipChat hands us URLs that we then fetch, and those must never reach our own network.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from addon.errors import HostNotAllowed

__all__ = ["HostPolicy"]

_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")


class HostPolicy:
    """Decides whether a URL's host may be fetched or redirected to."""

    def __init__(self, hosts: tuple[str, ...]) -> None:
        self.hosts = frozenset(h.lower() for h in hosts)
        self.any_host = "*" in self.hosts

    def check(self, url: object, *, what: str) -> str:
        """Return ``url`` when it may be used; else raise ``HostNotAllowed`` naming ``what``."""
        if not isinstance(url, str) or not url or len(url) > 2048:
            raise HostNotAllowed(f"{what} is missing or not a URL; expected an http(s) URL")
        # urlsplit drops tabs and newlines silently, and httpx refuses control characters: a URL
        # holding either is never one HipChat sent.
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
            raise HostNotAllowed(f"{what} contains spaces or control characters; refused")
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            raise HostNotAllowed(f"{what} is not a valid URL; expected an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
            raise HostNotAllowed(f"{what} must be an http(s) URL with a host and no user info")
        if not self.is_allowed(host, port):
            raise HostNotAllowed(
                f"{what} points at host {host!r}, which is not in ADDON_HIPCHAT_HOSTS; "
                "add the HipChat server's host there"
            )
        return url

    def is_allowed(self, host: str, port: int | None) -> bool:
        """True when ``host`` (and ``port``) may be used."""
        host = host.lower().rstrip(".")
        listed = host in self.hosts or (port is not None and f"{host}:{port}" in self.hosts)
        if listed:
            return True
        return self.any_host and not _is_internal(host)


def _is_internal(host: str) -> bool:
    """True for hosts that only ``ADDON_HIPCHAT_HOSTS`` may name explicitly."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        # "2130706433" or "0x7f.1" are not dotted quads but resolvers still read them as IPs.
        return bool(_NUMERIC_HOST.fullmatch(host))
    return not address.is_global or address.is_multicast
