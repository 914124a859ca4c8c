"""Decompression bombs on every path that reads HipChat's answers: documents, tokens, REST.

The bombs come from a real HTTP server on a loopback socket: 200 MiB of zeros, gzip-compressed to
about 200 KB (or 500 bytes, compressed twice). Without a cap on decoded bytes, reading one takes
hundreds of MiB; with it, the peak resident memory stays within 50 MiB of where it started.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from addon.bodies import read_capped
from addon.errors import InstallRefused, TokenError, UpstreamError
from addon.hipchat import HipChatClient
from addon.installations import Installation
from addon.lifecycle import fetch_document
from addon.settings import Secret
from addon.tokens import fetch_token
from tests.helpers import free_port, served

pytestmark = pytest.mark.anyio

BOMB_BYTES = 200 << 20
MIB = 1 << 20


def gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed a MiB at a time (never holding them all)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(MIB)
    parts = [compressor.compress(block) for _ in range(size // MIB)]
    return b"".join([*parts, compressor.flush()])


def deflate_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS)
    block = bytes(MIB)
    parts = [compressor.compress(block) for _ in range(size // MIB)]
    return b"".join([*parts, compressor.flush()])


TOKEN = b'{"access_token": "small", "expires_in": 3600, "scope": "send_notification"}'


def bombs() -> dict[str, tuple[str, bytes]]:
    """Path segment -> (Content-Encoding, body)."""
    once = gzip_zeros(BOMB_BYTES)
    return {
        "gzip": ("gzip", once),
        "deflate": ("deflate", deflate_zeros(BOMB_BYTES)),
        "gzip-gzip": ("gzip, gzip", gzip.compress(once)),
        "raw-deflate": ("deflate", zlib.compress(TOKEN)[2:-4]),
        "br": ("br", b"\x8b\x02\x80{}\x03"),
        "small": ("gzip", gzip.compress(TOKEN)),
        "plain": ("identity", TOKEN),
        "deep": ("gzip", gzip.compress(b"[" * 30_000 + b"]" * 30_000)),
    }


@pytest.fixture(scope="module")
def bomb_server() -> Iterator[str]:
    """Base URL of a server answering ``/<kind>/<anything>`` with that kind of body."""
    table = bombs()

    async def answer(request: Request) -> Response:
        encoding, body = table[request.path_params["kind"]]
        return Response(body, headers={"content-encoding": encoding})

    app = Starlette(routes=[Route("/{kind}/{rest:path}", answer, methods=["GET", "POST"])])
    port = free_port()
    with served(app, port):
        yield f"http://127.0.0.1:{port}"


def _status(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, field
    return int(match[1]) * 1024


class PeakMemory:
    """Peak resident memory from now on (Linux: VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")
        self.baseline = _status("VmRSS")

    def growth(self) -> int:
        return _status("VmHWM") - self.baseline


BOMBS = ["gzip", "deflate", "gzip-gzip"]


@pytest.fixture
async def http(bomb_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        await client.get(f"{bomb_server}/plain/warm-up")  # connection pools, TLS context...
        yield client


def installation(token_url: str) -> Installation:
    return Installation(
        oauth_id="client",
        oauth_secret=Secret("secret"),
        group_id=1,
        room_id=1,
        capabilities_url="http://hipchat.test/v2/capabilities",
        token_url=token_url,
        authorization_url=None,
        api_url="http://hipchat.test/v2",
        scopes=("send_notification",),
        installed_at=0.0,
    )


@pytest.mark.parametrize("kind", BOMBS)
async def test_a_capabilities_document_bomb_is_refused_at_the_cap(
    http: httpx.AsyncClient, bomb_server: str, kind: str
) -> None:
    memory = PeakMemory()
    with pytest.raises(InstallRefused, match="Could not fetch the capabilities document") as error:
        await fetch_document(
            http,
            f"{bomb_server}/{kind}/v2/capabilities",
            what="The capabilities document",
            max_bytes=256 * 1024,
            seconds=30,
        )
    assert memory.growth() < 50 * MIB
    reason = str(error.value.__cause__)
    assert "larger than 262144 bytes" in reason or "not supported" in reason


@pytest.mark.parametrize("kind", BOMBS)
async def test_a_token_response_bomb_is_refused_at_the_cap(
    http: httpx.AsyncClient, bomb_server: str, kind: str
) -> None:
    memory = PeakMemory()
    with pytest.raises(TokenError, match=r"larger than 65536 bytes|not supported"):
        await fetch_token(
            http, installation(f"{bomb_server}/{kind}/token"), {"grant_type": "x"}, now=0
        )
    assert memory.growth() < 50 * MIB


@pytest.mark.parametrize("kind", BOMBS)
async def test_a_rest_answer_bomb_is_refused_at_the_cap(
    http: httpx.AsyncClient, bomb_server: str, kind: str
) -> None:
    hipchat = HipChatClient(f"{bomb_server}/{kind}/v2", token="t", http=http, timeout=30)
    memory = PeakMemory()
    with pytest.raises(UpstreamError, match=r"larger than 1048576 bytes|not supported"):
        await hipchat.get_room(1)
    assert memory.growth() < 50 * MIB


async def test_a_rest_answer_under_the_cap_is_decoded(
    http: httpx.AsyncClient, bomb_server: str
) -> None:
    hipchat = HipChatClient(f"{bomb_server}/small/v2", token="t", http=http)
    assert (await hipchat.get_room(1))["access_token"] == "small"


@pytest.mark.parametrize("kind", ["small", "plain", "raw-deflate"])
async def test_answers_under_the_cap_are_decoded(
    http: httpx.AsyncClient, bomb_server: str, kind: str
) -> None:
    token = await fetch_token(
        http, installation(f"{bomb_server}/{kind}/token"), {"grant_type": "x"}, now=0
    )
    assert token.access_token == "small"


async def test_an_encoding_we_cannot_bound_is_refused(
    http: httpx.AsyncClient, bomb_server: str
) -> None:
    async with http.stream("GET", f"{bomb_server}/br/x") as response:
        with pytest.raises(UpstreamError, match="content encoding 'br' is not supported"):
            await read_capped(response, max_bytes=1024, error=UpstreamError)


async def test_a_corrupt_compressed_answer_is_refused(
    http: httpx.AsyncClient, bomb_server: str
) -> None:
    async with http.stream("GET", f"{bomb_server}/plain/x") as response:
        response.headers["content-encoding"] = "gzip"
        with pytest.raises(UpstreamError, match="corrupt"):
            await read_capped(response, max_bytes=1024, error=UpstreamError)


async def test_an_in_memory_answer_is_capped_too() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 2048))
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("http://hipchat.test/")
        with pytest.raises(UpstreamError, match="larger than 1024 bytes"):
            await read_capped(response, max_bytes=1024, error=UpstreamError)


async def test_deeply_nested_answers_are_refused_not_crashed_on(
    http: httpx.AsyncClient, bomb_server: str
) -> None:
    with pytest.raises(InstallRefused):
        await fetch_document(
            http, f"{bomb_server}/deep/x", what="The document", max_bytes=256 * 1024, seconds=30
        )
    with pytest.raises(TokenError, match="cannot read"):
        await fetch_token(
            http, installation(f"{bomb_server}/deep/token"), {"grant_type": "x"}, now=0
        )
