"""``AppTransport``: an app called in-process answers as from a server, and may run on."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from addon.testing import AppTransport

pytestmark = pytest.mark.anyio


class Lingering:
    """An ASGI app that answers, then goes on until ``release`` is set (or fails: ``fail``)."""

    def __init__(self, *, fail: str | None = None) -> None:
        self.release = asyncio.Event()
        self.ended = False
        self.fail = fail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fail == "before":
            raise LookupError("failed before the response")
        await send({"type": "http.response.start", "status": 202, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"acc", "more_body": True})
        await send({"type": "http.response.body", "body": b"epted"})
        await self.release.wait()
        self.ended = True
        if self.fail == "after":
            raise LookupError("failed after the response")


async def test_the_response_returns_before_the_app_ends_and_close_waits_for_it() -> None:
    app = Lingering()
    client = httpx.AsyncClient(transport=AppTransport(app), base_url="http://addon.test")
    response = await client.post("/x", content=b"body")
    assert (response.status_code, response.text, response.headers["x-a"]) == (202, "accepted", "1")
    assert not app.ended
    closing = asyncio.get_running_loop().create_task(client.aclose())
    await asyncio.sleep(0)
    assert not closing.done()  # waits for the call still running
    app.release.set()
    await closing
    assert app.ended


async def test_a_failure_before_the_response_is_raised_to_the_caller() -> None:
    async with httpx.AsyncClient(transport=AppTransport(Lingering(fail="before"))) as client:
        with pytest.raises(LookupError, match="before the response"):
            await client.get("http://addon.test/")


async def test_without_raise_app_exceptions_a_failure_is_a_500() -> None:
    transport = AppTransport(Lingering(fail="before"), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("http://addon.test/")
    assert response.status_code == 500


async def test_a_failure_after_the_response_is_raised_when_the_client_closes() -> None:
    app = Lingering(fail="after")
    client = httpx.AsyncClient(transport=AppTransport(app))
    assert (await client.get("http://addon.test/")).status_code == 202
    app.release.set()
    with pytest.raises(LookupError, match="after the response"):
        await client.aclose()


async def test_without_raise_app_exceptions_a_failure_after_the_response_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Lingering(fail="after")
    client = httpx.AsyncClient(transport=AppTransport(app, raise_app_exceptions=False))
    assert (await client.get("http://addon.test/")).status_code == 202
    app.release.set()
    with caplog.at_level("ERROR", logger="addon.testing"):
        await client.aclose()
    [record] = caplog.records
    assert record.exc_info is not None and "after the response" in str(record.exc_info[1])


async def test_an_app_that_returns_without_a_response_is_an_error() -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async with httpx.AsyncClient(transport=AppTransport(silent)) as client:
        with pytest.raises(RuntimeError, match="returned without completing its response"):
            await client.get("http://addon.test/")


async def test_a_caller_that_gives_up_cancels_the_apps_call() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with httpx.AsyncClient(transport=AppTransport(slow)) as client:
        call = asyncio.get_running_loop().create_task(client.get("http://addon.test/"))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert cancelled.is_set()  # as a client that disconnects: not waited for 60 s
