"""The Slack Bolt floor for ``bench/run.py``: an equivalent ``/echo`` slash command.

Served by uvicorn like the add-on (``uvicorn --app-dir bench bolt_app:create --factory``), through
Bolt's Starlette adapter, with Slack's v0 request signing verified (``BENCH_SLACK_SECRET``).
``BENCH_BOLT_PBR=1`` runs Bolt with ``process_before_response=True`` (the mode for FaaS: the
listener runs to the end before the response goes out, without Bolt's background task), the
``bolt-pbr`` target.

Bolt would call Slack's ``auth.test`` on the first request to learn about the bot token; an
``authorize`` function answering from memory keeps the bench off the network (the add-on, likewise,
answers ``/echo`` in the webhook response and never needs its token under load).
"""

from __future__ import annotations

import os
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def _authorize(**kwargs: Any) -> AuthorizeResult:
    return AuthorizeResult(
        enterprise_id=None,
        team_id=kwargs.get("team_id"),
        bot_user_id="UBENCHBOT",
        bot_id="BBENCHBOT",
        bot_token="xoxb-bench",
    )


def create() -> Starlette:
    """Bolt's AsyncApp with a ``/echo`` command that acks with the same text, under Starlette."""
    app = AsyncApp(
        signing_secret=os.environ["BENCH_SLACK_SECRET"],
        authorize=_authorize,
        process_before_response=os.environ.get("BENCH_BOLT_PBR") == "1",
    )

    @app.command("/echo")
    async def echo(ack: AsyncAck, command: dict[str, Any]) -> None:
        text = str(command.get("text", "")).strip()
        # With response_type Bolt answers JSON, as the add-on does (text alone goes as text/plain)
        await ack(text=text or "Usage: /echo <text>", response_type="in_channel")

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])
