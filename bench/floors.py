"""Floor apps for ``bench/run.py``: the least a server must do to answer the same ``/echo`` webhook.

Served by uvicorn like the add-on (``uvicorn --app-dir bench floors:create --factory``), chosen with
``BENCH_FLOOR``:

- ``a``: Starlette parses the webhook JSON and returns the reply the add-on returns;
- ``b``: (a) plus one PyJWT HS256 verification (secret from memory, by the unverified ``iss``);
- ``c``: (b) but the secret comes from one redis.asyncio GET (``bench:secret:<iss>``);
- ``c3`` (diagnostic, ``run.py --floor-c3``): (c) plus the add-on's two other Redis round trips per
  webhook, a second GET of the same key and a ``SET NX PX`` on the message id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jwt
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# As the add-on: HipChat's ``sub`` may be a number and its ``jti`` anything.
_OPTIONS: jwt.types.Options = {"verify_aud": False, "verify_sub": False, "verify_jti": False}


def reply_for(body: object) -> dict[str, object]:
    """The add-on's reply to ``/echo <text>``: the text back as a plain-text notification."""
    text = ""
    if isinstance(body, dict):
        item = body.get("item")
        message = item.get("message") if isinstance(item, dict) else None
        if isinstance(message, dict) and isinstance(message.get("message"), str):
            text = message["message"]
    args = text.partition(" ")[2].strip()
    return {"message": args or "Usage: /echo <text>", "message_format": "text", "notify": False}


def create() -> Starlette:
    """The floor app named by ``BENCH_FLOOR``."""
    kind = os.environ["BENCH_FLOOR"]
    secrets: dict[str, str] = json.loads(Path(os.environ["BENCH_SECRETS"]).read_text())
    store = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)

    async def webhook(request: Request) -> Response:
        body = json.loads(await request.body())
        if kind != "a":
            token = request.headers.get("authorization", "").partition(" ")[2]
            issuer = jwt.decode(token, options={"verify_signature": False})["iss"]
            secret = (
                secrets.get(issuer) if kind == "b" else await store.get(f"bench:secret:{issuer}")
            )
            if secret is None:
                return JSONResponse({"error": "unknown issuer"}, status_code=401)
            jwt.decode(token, secret, algorithms=["HS256"], options=_OPTIONS)
            if kind == "c3":
                await store.get(f"bench:secret:{issuer}")
                message_id = body["item"]["message"]["id"]
                await store.set(f"bench:seen:{issuer}:{message_id}", "1", nx=True, px=600_000)
        return JSONResponse(reply_for(body))

    return Starlette(routes=[Route("/webhook/{event}", webhook, methods=["POST"])])
