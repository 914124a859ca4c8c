"""The request machinery under ``HipChatClient``: URLs, retries, errors and paging.

Retry policy (docs/protocol.md, Rate limits and Error bodies):

- 429 (rate limit or flood control) on any method: wait as ``Retry-After`` (seconds or an HTTP
  date), ``X-FloodControl-Reset`` or ``X-Ratelimit-Reset`` (Unix timestamps) say, capped by
  ``max_retry_wait``, then try again. HipChat refused the request, so even a POST is safe.
- 5xx, connection errors and timeouts: retried with exponential backoff for idempotent methods
  only; a POST may have been carried out, so it is not sent twice.
- Anything else that is not a success raises ``HipChatAPIError`` with HipChat's own message.
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from addon.bodies import read_capped
from addon.errors import HipChatAPIError, HostNotAllowed, UpstreamError
from addon.hipchat.operations import OPERATIONS_BY_NAME, Operation

__all__ = ["PathParams", "Query", "Transport", "encode_query", "error_message", "expand_path"]

logger = logging.getLogger("addon.hipchat")

PathParams = Mapping[str, "int | str"]
Query = Mapping[str, "int | str | bool | None"]

#: The most one answer (a page of items, say) may hold once decoded.
MAX_RESPONSE_BYTES = 1024 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_PARAM = re.compile(r"{([a-z_]+)}")
# Path parameters that are credentials; error messages and logs show the template instead.
_SECRET_PARAMS = frozenset({"access_token", "token"})


def expand_path(template: str, params: PathParams, *, redact: bool = False) -> str:
    """Fill ``{name}`` slots with URL-quoted values; a ``/`` in a value stays inside its slot."""

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        value = str(params[name])
        if not value:
            raise ValueError(f"The path parameter {name!r} must not be empty")
        if redact and name in _SECRET_PARAMS:
            return match[0]
        return quote(value, safe="")

    return _PARAM.sub(fill, template)


def encode_query(query: Query) -> dict[str, str]:
    """Drop ``None`` values and spell booleans as HipChat does (``true``/``false``)."""
    encoded: dict[str, str] = {}
    for name, value in query.items():
        if isinstance(value, bool):
            encoded[name] = "true" if value else "false"
        elif value is not None:
            encoded[name] = str(value)
    return encoded


def error_message(response: httpx.Response) -> str:
    """HipChat's ``error.message`` (docs/protocol.md, Error bodies), else an excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str) and message:
            return message[:500]
    return " ".join(response.text.split())[:200] or response.reason_phrase


class Transport:
    """Sends one operation through httpx, retrying and raising as the module docstring says."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient,
        auth: httpx.Auth,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
        sleep: Callable[[float], Awaitable[None]],
        now: Callable[[], float],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.sleep = sleep
        self.now = now

    async def send(
        self,
        name: str,
        params: PathParams,
        *,
        query: Query | None = None,
        json: object = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        """Send operation ``name``; return its successful response or raise."""
        op = OPERATIONS_BY_NAME[name]
        url = self.base_url + expand_path(op.path, params)
        shown = self.base_url + expand_path(op.path, params, redact=True)
        request: dict[str, Any] = {"params": encode_query(query or {}), "headers": headers}
        if json is not None:
            request["json"] = json
        if content is not None or data is not None:
            request.update(content=content, data=data)
        response = await self._send_with_retries(op, url, shown, auth or self.auth, request)
        if response.is_success or (op.success // 100 == 3 and response.is_redirect):
            return response
        status = response.status_code
        cause = httpx.HTTPStatusError(
            f"{status} from {op.method} {shown}", request=response.request, response=response
        )
        raise HipChatAPIError(status, op.method, shown, error_message(response)) from cause

    async def _send_with_retries(
        self, op: Operation, url: str, shown: str, auth: httpx.Auth, request: dict[str, Any]
    ) -> httpx.Response:
        attempt = 0
        while True:
            outcome = await self._attempt(op, url, shown, auth, request, attempt)
            if isinstance(outcome, httpx.Response):
                return outcome
            await self.sleep(outcome)
            attempt += 1

    async def _attempt(
        self,
        op: Operation,
        url: str,
        shown: str,
        auth: httpx.Auth,
        request: dict[str, Any],
        attempt: int,
    ) -> httpx.Response | float:
        """One try: the response to keep, or how long to wait before the next try."""
        try:
            response = await self._request(op, url, shown, auth, request)
        except HostNotAllowed as exc:
            raise UpstreamError(f"HipChat {op.method} {shown} refused: {exc}") from exc
        except httpx.TransportError as exc:
            failure = f"HipChat {op.method} {shown} failed: {type(exc).__name__}"
            if op.method not in _IDEMPOTENT or attempt >= self.max_retries:
                raise UpstreamError(failure) from exc
            logger.warning("%s; retrying", failure)
            return self._backoff(attempt)
        wait = self._retry_wait(op, response, attempt)
        if wait is None:
            return response
        logger.warning("HipChat %s %s: %d; retrying", op.method, shown, response.status_code)
        return wait

    async def _request(
        self, op: Operation, url: str, shown: str, auth: httpx.Auth, request: dict[str, Any]
    ) -> httpx.Response:
        """Send once and read the answer, at most ``MAX_RESPONSE_BYTES`` once decoded."""
        built = self.http.build_request(op.method, url, timeout=self.timeout, **request)
        # redirecting operations return the Location
        response = await self.http.send(built, auth=auth, follow_redirects=False, stream=True)
        try:

            def too_large(reason: str) -> UpstreamError:
                return UpstreamError(f"HipChat {op.method} {shown}: {reason}; refused")

            body = await read_capped(response, max_bytes=MAX_RESPONSE_BYTES, error=too_large)
        finally:
            await response.aclose()
        # The body is decoded already: the buffered copy must not claim an encoding.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=response.request,
            extensions=response.extensions,  # keeps HipChat's reason phrase
        )

    def _retry_wait(self, op: Operation, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or None to keep it."""
        if attempt >= self.max_retries:
            return None
        if response.status_code == 429:
            return self._rate_limit_wait(response.headers, attempt)
        if response.status_code >= 500 and op.method in _IDEMPOTENT:
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        return min(self.max_retry_wait, 0.5 * 2.0**attempt)

    def _rate_limit_wait(self, headers: httpx.Headers, attempt: int) -> float:
        wait = _seconds_from_retry_after(headers.get("retry-after", ""), self.now())
        if wait is None and headers.get("x-floodcontrol-remaining") == "0":
            wait = _seconds_until(headers.get("x-floodcontrol-reset", ""), self.now())
        if wait is None:
            wait = _seconds_until(headers.get("x-ratelimit-reset", ""), self.now())
        if wait is None:
            wait = self._backoff(attempt)
        return min(self.max_retry_wait, max(0.0, wait))


def _seconds_from_retry_after(value: str, now: float) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError):
        return None


def _seconds_until(timestamp: str, now: float) -> float | None:
    try:
        return float(timestamp) - now
    except ValueError:
        return None
