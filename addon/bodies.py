"""Reading what HipChat (or a URL it handed us) answers, with a cap on the *decoded* bytes.

httpx decodes gzip a whole network chunk at a time, and a stack of encodings (``gzip, gzip``)
layer by layer: 64 KiB of input can become gigabytes before any caller could count them. So
``read_capped`` reads the raw stream and inflates it itself, never producing more than the bytes
still allowed, and refuses encodings it cannot bound (brotli, zstd, stacked encodings): HipChat
sends plain or gzip/deflate answers, and we only ask for those.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import httpx

from addon.errors import AddonError

__all__ = ["read_capped"]

_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


async def read_capped(
    response: httpx.Response, *, max_bytes: int, error: Callable[[str], AddonError]
) -> bytes:
    """The decoded body of a streamed ``response``, or ``error(reason)`` past ``max_bytes``.

    The stream is closed as soon as the cap is passed; memory never holds much more than
    ``max_bytes`` of decoded body, however well the answer compresses.
    """
    if response.is_stream_consumed:
        # Built in memory (httpx.MockTransport): decoded already, only the cap is left to check.
        return _checked(response.content, max_bytes, error)
    try:
        inflater = _Inflater.for_encoding(response.headers.get("content-encoding", ""))
    except ValueError as exc:
        await response.aclose()
        raise error(str(exc)) from None
    body = bytearray()
    async for raw in response.aiter_raw():
        try:
            inflater.feed(raw, body, limit=max_bytes + 1)
        except zlib.error:
            await response.aclose()
            raise error("the compressed answer is corrupt") from None
        if len(body) > max_bytes:
            await response.aclose()
            break
    return _checked(bytes(body), max_bytes, error)


def _checked(body: bytes, max_bytes: int, error: Callable[[str], AddonError]) -> bytes:
    if len(body) > max_bytes:
        raise error(f"the answer is larger than {max_bytes} bytes")
    return body


class _Inflater:
    """Decodes one content encoding (or none) into a buffer, never past a limit."""

    def __init__(self, wbits: int | None) -> None:
        self.wbits = wbits
        self.decoder = zlib.decompressobj(wbits) if wbits is not None else None
        self.started = False

    @classmethod
    def for_encoding(cls, header: str) -> _Inflater:
        encodings = [e.strip().lower() for e in header.split(",") if e.strip()]
        encodings = [e for e in encodings if e != "identity"]
        if not encodings:
            return cls(None)
        if len(encodings) > 1 or encodings[0] not in _WBITS:
            raise ValueError(f"the answer's content encoding {header!r} is not supported")
        return cls(_WBITS[encodings[0]])

    def feed(self, raw: bytes, body: bytearray, *, limit: int) -> None:
        """Append what ``raw`` decodes to, stopping once ``body`` holds ``limit`` bytes."""
        if self.decoder is None:
            body += raw[: max(limit - len(body), 0)]
            return
        try:
            self._inflate(raw, body, limit)
        except zlib.error:
            if self.started or self.wbits != zlib.MAX_WBITS:
                raise
            # "deflate" is meant to be zlib-wrapped, but some servers send a raw deflate stream.
            self.decoder, self.wbits = zlib.decompressobj(-zlib.MAX_WBITS), -zlib.MAX_WBITS
            self._inflate(raw, body, limit)
        self.started = True

    def _inflate(self, data: bytes, body: bytearray, limit: int) -> None:
        decoder = self.decoder
        while decoder is not None and data and len(body) < limit:
            # max_length bounds this call's output; the rest of the input waits in the tail.
            body += decoder.decompress(data, limit - len(body))
            data = decoder.unconsumed_tail
