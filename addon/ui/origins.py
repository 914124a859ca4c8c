"""Which web origins are the installation's HipChat: for CORS on glances and CSP on pages.

HipChat's web client runs on the installation's host (``www.hipchat.com`` or a group's own
``<group>.hipchat.com`` for cloud, the server's host otherwise); the API host is
``api.hipchat.com``. Derived from the installation's ``capabilitiesUrl`` and ``apiUrl``; an
``api.`` host also admits its sibling subdomains ([inferred], lenient: see docs/protocol.md,
Glance data).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from addon.installations import Installation

__all__ = ["frame_ancestors", "hipchat_js_base", "is_hipchat_origin", "origin_of"]


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, or None when it is not an http(s) URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _origins(installation: Installation) -> list[str]:
    found = [origin_of(installation.capabilities_url), origin_of(installation.api_url)]
    return list(dict.fromkeys(o for o in found if o))


def _sibling_domain(origin: str) -> tuple[str, str] | None:
    """``(scheme, "hipchat.com")`` for ``https://api.hipchat.com``; None for other hosts."""
    scheme, _, netloc = origin.partition("://")
    first, dot, rest = netloc.partition(".")
    if first in ("api", "www") and dot and "." in rest:
        return scheme, rest
    return None


def is_hipchat_origin(origin: str, installation: Installation, addon_origin: str) -> bool:
    """True when a browser at ``origin`` is the installation's HipChat (or the add-on itself)."""
    origin = origin.lower().rstrip("/")
    if origin == addon_origin.lower() or origin in _origins(installation):
        return True
    scheme, _, netloc = origin.partition("://")
    for known in _origins(installation):
        sibling = _sibling_domain(known)
        if sibling and scheme == sibling[0] and netloc.endswith("." + sibling[1]):
            return True
    return False


def frame_ancestors(installation: Installation) -> str:
    """The CSP ``frame-ancestors`` value: the installation's HipChat host(s) only."""
    sources = _origins(installation)
    for known in list(sources):
        sibling = _sibling_domain(known)
        if sibling:
            sources.append(f"{sibling[0]}://*.{sibling[1]}")
    return " ".join(dict.fromkeys(sources)) or "'none'"


def hipchat_js_base(installation: Installation) -> str:
    """Where the installation's HipChat serves ``all.js``/``all.css`` (``/atlassian-connect``)."""
    origin = origin_of(installation.capabilities_url) or "https://www.hipchat.com"
    sibling = _sibling_domain(origin)
    if sibling and origin.startswith(f"{sibling[0]}://api."):
        origin = f"{sibling[0]}://www.{sibling[1]}"
    return f"{origin}/atlassian-connect"
