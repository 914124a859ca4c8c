"""``AppTransport``: an app called in-process, answering as a server answers.

``httpx.ASGITransport`` returns a response only once the app's call has returned. A server sends
it as soon as its last body message is out, while the app may still run: a webhook whose
handler outlives the reply window is answered at the window (``addon.dispatch``), and the
handler goes on in the request's task. This transport does the same, so a test sees what
HipChat sees: the 204 at the window, then the late reply through REST.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx

__all__ = ["AppTransport"]

log = logging.getLogger("addon.testing")
_Message = MutableMapping[str, Any]


class AppTransport(httpx.ASGITransport):
    """``httpx.ASGITransport`` that returns each response as soon as its body is complete.

    The app's call runs in a task of its own and may go on after its response; ``aclose``
    (the client's) waits for the calls still running. An app that fails before its response
    is complete, or as it completes it (Starlette sends a 500 and re-raises), raises here, as
    with ``httpx.ASGITransport`` (``raise_app_exceptions``, the default; else the response, or
    a 500). One that fails later makes ``aclose`` raise the first such failure and log the
    others, so no test misses it.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self._calls: set[asyncio.Task[None]] = set()  # running, or failed after the response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": self.client,
            "root_path": self.root_path,
        }
        chunks = request.stream.__aiter__()
        loop = asyncio.get_running_loop()
        complete: asyncio.Future[None] = loop.create_future()
        body_read = False
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []

        async def receive() -> _Message:
            nonlocal body_read
            if body_read:
                await asyncio.shield(complete)  # as a server: a disconnect after the response
                return {"type": "http.disconnect"}
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                body_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: _Message) -> None:
            nonlocal status, headers
            if complete.cancelled():
                return  # the caller gave up: as a server writing to a closed connection
            if message["type"] == "http.response.start":
                assert status is None, "the response was started twice"
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                assert not complete.done(), "a body message after the response was complete"
                if message.get("body") and request.method != "HEAD":
                    parts.append(message["body"])
                if not message.get("more_body", False):
                    complete.set_result(None)

        task = loop.create_task(self._call(scope, receive, send))
        self._calls.add(task)
        task.add_done_callback(lambda done: self._ended(done, complete))
        try:
            await asyncio.shield(complete)
        except asyncio.CancelledError:
            complete.cancel()  # nobody waits for it any more
            task.cancel()  # the caller gave up: as a client that disconnects
            raise
        except Exception:
            self._calls.discard(task)  # its failure is this call's
            if self.raise_app_exceptions:
                raise
            if status is None:
                status, headers = 500, []
        else:
            if task.done():  # it ended with its response: what it raised is this call's too
                self._calls.discard(task)
                failure = None if task.cancelled() else task.exception()
                if failure is not None and self.raise_app_exceptions:
                    raise failure
        assert status is not None
        return httpx.Response(status, headers=headers, stream=_Body(parts))

    async def _call(self, scope: _Message, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        """Wait for the app calls still running; raise the first that failed after its response
        (``raise_app_exceptions``), and log the others."""
        while running := [task for task in self._calls if not task.done()]:
            await asyncio.wait(running)
        calls, self._calls = self._calls, set()
        failures = [e for t in calls if not t.cancelled() and (e := t.exception()) is not None]
        raised = 1 if self.raise_app_exceptions else 0  # the first is raised, or logged too
        for failure in failures[raised:]:
            log.error("The app failed after its response", exc_info=failure)
        if failures and raised:
            raise failures[0]

    def _ended(self, task: asyncio.Task[None], complete: asyncio.Future[None]) -> None:
        failure = None if task.cancelled() else task.exception()
        if not complete.done():  # ended with no response: the caller raises why
            why = (
                "was cancelled" if task.cancelled() else "returned without completing its response"
            )
            complete.set_exception(failure or RuntimeError(f"The app's call {why}"))
            self._calls.discard(task)
        elif failure is None:
            self._calls.discard(task)  # nothing to report: forget it


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"".join(self._parts)
