"""Static files of an integration (icons, page assets), served from its own ``static/`` folder.

Nothing from a request decides which file is read beyond a name *inside* that folder: every
segment must be a plain name (no ``..``, no leading dot, no backslash, no encoded separator, no
drive or absolute path), and the resolved path must still lie inside the folder (symlinks too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import mimetypes
import re
from pathlib import Path

from addon.errors import NotFound

__all__ = ["MAX_STATIC_BYTES", "StaticFile", "read_static"]

MAX_STATIC_BYTES = 5 << 20
_SEGMENT = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_@.+-]{0,127}")


@dataclasses.dataclass(frozen=True)
class StaticFile:
    """A file's bytes, media type and ETag."""

    body: bytes
    media_type: str
    etag: str


def read_static(folder: Path, raw_path: str) -> StaticFile:
    """The file at ``raw_path`` (still percent-encoded) inside ``folder``; ``NotFound`` else."""
    segments = raw_path.split("/")
    if not raw_path or len(segments) > 8 or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise NotFound("No such static file; paths are plain names inside the static folder")
    root = folder.resolve()
    path = root.joinpath(*segments).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound("No such static file")
    if path.stat().st_size > MAX_STATIC_BYTES:
        raise NotFound("The static file is too large to serve")
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return StaticFile(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
