"""The allow-list for every URL HipChat hands us (``ADDON_HIPCHAT_HOSTS``), and how we reach it.

A URL passes when its scheme is http(s), it carries no user info, and its host is listed: a bare
``host`` entry allows the scheme's default port only (443 for https, 80 for http), ``host:port``
allows that port. ``*`` allows any host name, but never one that is, or resolves to, a loopback,
private, link-local, multicast, reserved or otherwise special address (IPv6 forms that embed an
IPv4 address are judged by that IPv4 address), unless that host or address is listed explicitly:
HipChat hands us URLs that we then fetch, and those must never reach our own network.

``PinnedTransport`` enforces this where the connection is made: it resolves the host once, checks
every address, and connects to the checked address (keeping ``Host`` and TLS SNI), so a second DNS
answer cannot point the connection elsewhere (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import httpx

from addon.errors import HostNotAllowed

__all__ = ["HostPolicy", "PinnedTransport", "Resolver", "resolve_host"]

#: Resolves a host name to its addresses (``resolve_host`` in production, a table in tests).
Resolver = Callable[[str], Awaitable[Sequence[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


async def resolve_host(host: str) -> Sequence[str]:
    """Every address ``host`` resolves to, from the event loop's ``getaddrinfo``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class HostPolicy:
    """Decides whether a URL's host may be fetched or redirected to, and where to connect."""

    def __init__(self, hosts: tuple[str, ...], *, resolve: Resolver = resolve_host) -> None:
        self.hosts = frozenset(h.lower() for h in hosts)
        self.any_host = "*" in self.hosts
        self.resolve = resolve

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
        if parts.scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
            raise HostNotAllowed(f"{what} must be an http(s) URL with a host and no user info")
        if not self.is_allowed(host, port or _DEFAULT_PORTS[parts.scheme], parts.scheme):
            raise HostNotAllowed(
                f"{what} points at host {host!r} on port {port or _DEFAULT_PORTS[parts.scheme]}, "
                "which is not in ADDON_HIPCHAT_HOSTS; add the HipChat server's host[:port] there"
            )
        return url

    def is_listed(self, host: str, port: int, scheme: str) -> bool:
        """True when ``ADDON_HIPCHAT_HOSTS`` names ``host`` for ``port`` explicitly."""
        host = _bare(host)
        if f"{host}:{port}" in self.hosts or f"[{host}]:{port}" in self.hosts:
            return True
        return port == _DEFAULT_PORTS.get(scheme) and (
            host in self.hosts or f"[{host}]" in self.hosts
        )

    def is_allowed(self, host: str, port: int, scheme: str) -> bool:
        """True when a URL on ``host``/``port`` may be used (before its name is resolved)."""
        return self.is_listed(host, port, scheme) or (self.any_host and not _is_internal(host))

    async def pin(self, url: httpx.URL) -> str:
        """The checked address to connect to for ``url``; raise ``HostNotAllowed`` otherwise.

        The host is resolved once, and under ``*`` every address it resolves to must be public
        (or listed itself): one internal answer among public ones refuses the whole host.
        """
        host, scheme = _bare(url.host), url.scheme
        port = url.port or _DEFAULT_PORTS.get(scheme, 0)
        if not self.is_allowed(host, port, scheme):
            raise HostNotAllowed(f"Host {host!r} on port {port} is not in ADDON_HIPCHAT_HOSTS")
        literal = _ip(host)
        if literal is not None:
            return str(literal)
        try:
            addresses = [a for a in (_ip(str(x)) for x in await self.resolve(host)) if a]
        except OSError as exc:
            raise HostNotAllowed(f"Host {host!r} could not be resolved") from exc
        if not addresses:
            raise HostNotAllowed(f"Host {host!r} could not be resolved")
        if not self.is_listed(host, port, scheme):
            for address in addresses:
                if _is_internal_address(address) and not self.is_listed(str(address), port, scheme):
                    raise HostNotAllowed(
                        f"Host {host!r} resolves to an internal address; list it in "
                        "ADDON_HIPCHAT_HOSTS if it is really a HipChat server"
                    )
        return str(addresses[0])


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends each request to the address ``policy.pin`` checked, keeping ``Host`` and TLS SNI.

    Each host name gets its own connection pool: pools are keyed by address, and a connection
    whose TLS was verified for one name must never carry a request for another name that
    happens to resolve to the same address. ``transport`` (tests) replaces them all.

    ```python
    http = httpx.AsyncClient(transport=PinnedTransport(HostPolicy(("api.hipchat.com",))))
    ```
    """

    def __init__(
        self,
        policy: HostPolicy,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_pools: int = 64,
        remember: float = 30.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.shared = transport
        self.ssl_context = ssl_context
        self.max_pools = max_pools
        self.pools: dict[str, httpx.AsyncBaseTransport] = {}
        self.remember, self.now = remember, now
        self.pinned: dict[tuple[str, str, int | None], tuple[float, str]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check and pin ``request``'s host, then send it to that address."""
        address = await self._address(request.url)
        host = request.url.host
        extensions = dict(request.extensions)
        if request.url.scheme == "https" and _ip(host) is None:
            extensions["sni_hostname"] = host  # TLS SNI and certificate checks use the name
        # A new request: an auth flow may send the original again, and it must be checked again.
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # keeps the Host header of the original URL
            stream=request.stream,
            extensions=extensions,
        )
        transport = self.shared or await self._pool_for(host.lower())
        return await transport.handle_async_request(pinned)

    async def _address(self, url: httpx.URL) -> str:
        """``policy.pin(url)``, remembered for ``remember`` seconds: no DNS query per request."""
        key = (url.scheme, url.host.lower(), url.port)
        expires, address = self.pinned.get(key, (0.0, ""))
        if expires > self.now():
            return address
        address = await self.policy.pin(url)
        if len(self.pinned) >= 1024:  # only under "*": many names, development
            self.pinned.clear()
        self.pinned[key] = (self.now() + self.remember, address)
        return address

    async def _pool_for(self, host: str) -> httpx.AsyncBaseTransport:
        pool = self.pools.get(host)
        if pool is None:
            if len(self.pools) >= self.max_pools:  # only under "*": many names, development
                await self.pools.pop(next(iter(self.pools))).aclose()
            if self.ssl_context is None:  # one for all pools, made when first needed
                self.ssl_context = httpx.create_ssl_context()
            # trust_env=False: no proxy from the environment, which would connect elsewhere.
            pool = httpx.AsyncHTTPTransport(verify=self.ssl_context, trust_env=False)
            self.pools[host] = pool
        return pool

    async def aclose(self) -> None:
        """Close every connection pool (or the transport passed in)."""
        pools, self.pools = [*self.pools.values()], {}
        if self.shared is not None:
            pools.append(self.shared)
        for pool in pools:
            await pool.aclose()


def _bare(host: str) -> str:
    return host.lower().rstrip(".").strip("[]")


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _is_internal(host: str) -> bool:
    """True for host names and literals that only ``ADDON_HIPCHAT_HOSTS`` may name explicitly."""
    host = _bare(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _ip(host)
    if address is None:
        # "2130706433" or "0x7f.1" are not dotted quads but resolvers still read them as IPs.
        return bool(_NUMERIC_HOST.fullmatch(host))
    return _is_internal_address(address)


def _is_internal_address(address: IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, reserved, shared and such addresses."""
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    if embedded:
        return any(_is_internal_address(v4) for v4 in embedded)
    if isinstance(address, ipaddress.IPv6Address) and address in _NAT64_LOCAL:
        return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, compatible, 6to4, NAT64, Teredo)."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []
