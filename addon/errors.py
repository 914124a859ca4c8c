"""The error tree of hipchat-addon.

Every error the add-on raises on purpose derives from ``AddonError``. Subclasses are grouped by who
must react, and each class carries the HTTP status it is answered with (``http_status``, inherited
by its subclasses): ``routes.py`` reads it from the class, so no table order decides a status.
(``http_status``, not ``status_code``: ``HipChatAPIError.status_code`` is HipChat's own status.)

    AddonError
    ├── ConfigError            start-up: the process stops with the message
    │   └── SecretKeyMismatch  503: stored secrets do not open with ADDON_SECRET_KEY (or none set)
    ├── IntegrationError       an integration author's bug, raised when integrations load
    ├── RequestError           400: the caller sent something we refuse
    │   ├── HostNotAllowed     a URL HipChat handed us points off the allow-list
    │   ├── InstallRefused     the install cannot go ahead (links.self, allowRoom, credentials...)
    │   ├── QuotaExceeded      a storage write would take an integration past its quota
    │   ├── BodyTooLarge       413: the request body is over its cap
    │   ├── BodyTimeout        408: the request body did not arrive in time
    │   └── ClientDisconnected the client went away before its body was read (not logged)
    ├── AuthError              401: who is calling cannot be established
    │   ├── InvalidJWT
    │   └── UnknownInstallation
    ├── Forbidden              403: the caller is known but may not do this
    ├── NotFound               404
    ├── Conflict               409: another capabilitiesUrl holds the installation
    ├── UpstreamError          502: HipChat (or its token endpoint) failed us
    │   ├── HipChatAPIError    a REST call answered an error status
    │   └── TokenError         the token endpoint refused or failed
    │       ├── ClientGone         the OAuth client no longer exists (401 from the token endpoint)
    │       └── ApprovalRequired   403: a user token is missing or its refresh was refused
    ├── StoreUnavailable       503: the store cannot be reached
    └── ShuttingDown           503: the add-on is stopping and takes no new work

This module is a leaf: it imports nothing from ``addon``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AddonError",
    "ApprovalRequired",
    "AuthError",
    "BodyTimeout",
    "BodyTooLarge",
    "ClientDisconnected",
    "ClientGone",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HipChatAPIError",
    "HostNotAllowed",
    "InstallRefused",
    "IntegrationError",
    "InvalidJWT",
    "NotFound",
    "QuotaExceeded",
    "RequestError",
    "SecretKeyMismatch",
    "ShuttingDown",
    "StoreUnavailable",
    "TokenError",
    "UnknownInstallation",
    "UpstreamError",
]


class AddonError(Exception):
    """Root of every error hipchat-addon raises on purpose."""

    http_status: ClassVar[int] = 500


class ConfigError(AddonError):
    """A setting or a data file is wrong; raised at start-up."""


class SecretKeyMismatch(ConfigError):
    """The store holds secrets sealed with another ``ADDON_SECRET_KEY``, or with one while none
    is set (503): an operator's error, answered until the key is put back, never a crash."""

    http_status = 503


class IntegrationError(AddonError):
    """An integration module is wrong; raised when integrations are loaded."""


class RequestError(AddonError):
    """The request is malformed or asks for something we refuse (400)."""

    http_status = 400


class HostNotAllowed(RequestError):
    """A URL points at a host that is not in ``ADDON_HIPCHAT_HOSTS``."""


class InstallRefused(RequestError):
    """An installation cannot go ahead."""


class QuotaExceeded(RequestError):
    """A storage write would take an integration's storage past ``ADDON_STORAGE_QUOTA``.

    Its message is what the room is told, so it names the integration and the fix.
    """


class BodyTooLarge(RequestError):
    """A request body is larger than its endpoint accepts (413); refused while it streams."""

    http_status = 413


class BodyTimeout(RequestError):
    """A request body did not arrive within the read timeout (408)."""

    http_status = 408


class ClientDisconnected(RequestError):
    """The client disconnected before its request body was read; nobody reads the answer."""


class AuthError(AddonError):
    """The caller could not be authenticated (401)."""

    http_status = 401


class InvalidJWT(AuthError):
    """A signed request carries a JWT that does not verify."""


class UnknownInstallation(AuthError):
    """No installation is stored for the given oauth_id."""


class Forbidden(AddonError):
    """The caller is known but may not do this (403)."""

    http_status = 403


class NotFound(AddonError):
    """The thing asked for does not exist (404)."""

    http_status = 404


class Conflict(AddonError):
    """The request contradicts what is stored (409); nothing was changed."""

    http_status = 409


class UpstreamError(AddonError):
    """HipChat, or a URL it gave us, failed (502)."""

    http_status = 502


class HipChatAPIError(UpstreamError):
    """A HipChat REST call answered an error status.

    Carries ``status_code``, ``method``, ``url`` and HipChat's own error message, never the token.
    """

    def __init__(self, status_code: int, method: str, url: str, message: str) -> None:
        self.status_code = status_code
        self.method = method
        self.url = url
        self.message = message
        super().__init__(f"HipChat answered {status_code} to {method} {url}: {message}")


class TokenError(UpstreamError):
    """The token endpoint refused a request or could not be reached.

    ``retry_after`` is the endpoint's own ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientGone(TokenError):
    """The token endpoint answered 401: the installation's OAuth client no longer exists."""


class ApprovalRequired(TokenError):
    """A user has no usable token: they must approve the add-on (again).

    ``approval_url`` is where to send them, when it is known.
    """

    http_status = 403

    def __init__(self, message: str, approval_url: str | None = None) -> None:
        self.approval_url = approval_url
        super().__init__(message)


class StoreUnavailable(AddonError):
    """The store (Redis or SQLite) cannot be reached (503)."""

    http_status = 503


class ShuttingDown(AddonError):
    """The add-on is stopping and takes no new commands (503)."""

    http_status = 503
