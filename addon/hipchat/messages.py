"""Sending to rooms and users: notifications, messages, replies, links, files (docs/protocol.md)."""

from __future__ import annotations

import json
import mimetypes
import os
import secrets
from collections.abc import Mapping

import anyio

from addon.hipchat._api import APIGroup, compact
from addon.hipchat.types import Color, JSONObject, MessageFormat, RoomRef, UserRef

__all__ = ["FileSource", "MessagesAPI"]

FileSource = bytes | str | os.PathLike[str]
"""A file to share: its bytes, or the path of a local file (never a path taken from a user)."""


async def _file_share(
    source: FileSource, filename: str | None, message: str | None
) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/related`` body: part ``metadata`` (JSON) then part ``file``.

    See docs/protocol.md, REST conventions.
    """
    if isinstance(source, bytes):
        if not filename:
            raise ValueError("Sharing bytes needs a filename; pass filename='report.pdf'")
        data = source
    else:
        data = await anyio.Path(source).read_bytes()
        filename = filename or os.path.basename(source)
    boundary = secrets.token_hex(16)
    mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
    metadata = json.dumps(compact(message=message))
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n"
            f'Content-Disposition: attachment; name="metadata"\r\n\r\n{metadata}\r\n'
            f"--{boundary}\r\nContent-Type: {mime}\r\n"
            f'Content-Disposition: attachment; name="file"; filename="{quoted}"\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/related; boundary={boundary}"}


class MessagesAPI(APIGroup):
    """Everything that posts into a room or a private chat."""

    async def send_room_notification(
        self,
        room: RoomRef,
        message: str,
        *,
        message_format: MessageFormat = "html",
        color: Color | None = None,
        notify: bool = False,
        card: Mapping[str, object] | None = None,
        from_: str | None = None,
        attach_to: str | None = None,
    ) -> None:
        """Post a notification to a room as the add-on (``message`` is needed even with a card)."""
        body = compact(
            message=message,
            message_format=message_format,
            color=color,
            notify=notify,
            card=None if card is None else dict(card),
            attach_to=attach_to,
        )
        if from_ is not None:
            body["from"] = from_
        await self._no_content("send_room_notification", {"room_id_or_name": room}, json=body)

    async def send_message(self, room: RoomRef, message: str) -> JSONObject:
        """Post a plain message to a room as the token's user; return ``{"id", "timestamp"}``."""
        params = {"room_id_or_name": room}
        return await self._json("send_message", params, json={"message": message})

    async def reply_to_message(self, room: RoomRef, parent_message_id: str, message: str) -> None:
        """Reply to a message in a room."""
        body = {"parentMessageId": parent_message_id, "message": message}
        await self._no_content("reply_to_message", {"room_id_or_name": room}, json=body)

    async def share_link_with_room(
        self, room: RoomRef, link: str, message: str | None = None
    ) -> None:
        """Share a link with a room."""
        body = compact(link=link, message=message)
        await self._no_content("share_link_with_room", {"room_id_or_name": room}, json=body)

    async def share_file_with_room(
        self,
        room: RoomRef,
        path_or_bytes: FileSource,
        filename: str | None = None,
        message: str | None = None,
    ) -> None:
        """Share a file with a room (``filename`` defaults to the path's last part)."""
        content, headers = await _file_share(path_or_bytes, filename, message)
        params = {"room_id_or_name": room}
        await self._no_content("share_file_with_room", params, content=content, headers=headers)

    async def send_privatechat_message(
        self,
        user: UserRef,
        message: str,
        *,
        message_format: MessageFormat = "text",
        notify: bool = False,
    ) -> None:
        """Send a private (1:1) message to a user."""
        body = {"message": message, "message_format": message_format, "notify": notify}
        await self._no_content("send_privatechat_message", {"id_or_email": user}, json=body)

    async def share_link_with_user(
        self, user: UserRef, link: str, message: str | None = None
    ) -> None:
        """Share a link with a user in a private chat."""
        body = compact(link=link, message=message)
        await self._no_content("share_link_with_user", {"id_or_email": user}, json=body)

    async def share_file_with_user(
        self,
        user: UserRef,
        path_or_bytes: FileSource,
        filename: str | None = None,
        message: str | None = None,
    ) -> None:
        """Share a file with a user in a private chat."""
        content, headers = await _file_share(path_or_bytes, filename, message)
        params = {"id_or_email": user}
        await self._no_content("share_file_with_user", params, content=content, headers=headers)
