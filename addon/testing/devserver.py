"""``hipchat-addon dev``: the add-on with reload, a fake HipChat and the playground, side by side.

The fake HipChat and its playground page run in this process, on a thread of their own (their
state, installations and messages, survives the add-on's reloads); the add-on runs under uvicorn,
reloaded by watchfiles when ``integrations/`` or ``capabilities/`` change (``--no-reload``: in
this process). The add-on is pointed at the fake: its ``ADDON_BASE_URL`` is its own loopback URL,
the fake's host is added to ``ADDON_HIPCHAT_HOSTS``, and its store defaults to SQLite in
``./.hipchat-addon-dev/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

import uvicorn

from addon.settings import Settings
from addon.testing.fake import FakeHipChat
from addon.testing.playground import PlaygroundRoom, playground_app

__all__ = ["dev_environment", "run_dev"]

DEV_FOLDER = Path(".hipchat-addon-dev")
_HOST = "127.0.0.1"


def dev_environment(env: Mapping[str, str], port: int, hipchat_port: int) -> dict[str, str]:
    """``env`` with the add-on pointed at the fake HipChat on ``hipchat_port``."""
    hosts = [h for h in env.get("ADDON_HIPCHAT_HOSTS", "").split(",") if h.strip()]
    store = env.get("ADDON_STORE_URL") or f"sqlite:///{DEV_FOLDER / 'store.sqlite3'}"
    return {
        **env,
        "ADDON_BASE_URL": f"http://{_HOST}:{port}",
        "ADDON_HIPCHAT_HOSTS": ",".join([*hosts, f"{_HOST}:{hipchat_port}"]),
        "ADDON_STORE_URL": store,
    }


def run_dev(
    args: argparse.Namespace,
    env: Mapping[str, str],
    *,
    serve: Callable[[Settings, int, bool], None] | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> int:
    """Run the dev loop until interrupted (see the module docstring); returns the exit status.

    ``serve(settings, port, reload)`` runs the add-on until it stops (default: uvicorn), in an
    environment that gets the add-on's ``ADDON_*`` settings (``environ``, default ``os.environ``:
    uvicorn's reloaded process reads them from there).
    """
    from addon.app import build_addon_descriptor
    from addon.logs import configure_logging

    env = dev_environment(env, args.port, args.hipchat_port)
    settings = Settings.from_environ(env)
    build_addon_descriptor(settings)  # fail before binding when an integration is broken
    if settings.store_url.startswith(f"sqlite:///{DEV_FOLDER}"):
        DEV_FOLDER.mkdir(exist_ok=True)
    configure_logging(settings.log_level)
    target = os.environ if environ is None else environ
    target.update({k: v for k, v in env.items() if k.startswith("ADDON_")})
    # The playground polls the add-on: its own requests stay out of the console.
    logging.getLogger("httpx").addFilter(_NotTo(settings.base_url))
    playground = _start_playground(settings.base_url, args.hipchat_port)
    print(
        f"hipchat-addon dev: the add-on at {settings.base_url}, a fake HipChat at "
        f"http://{_HOST}:{args.hipchat_port}\n"
        f"  playground: http://{_HOST}:{args.hipchat_port}/playground",
        flush=True,
    )
    try:
        (serve or _run_addon)(settings, args.port, not args.no_reload)
    finally:
        playground.should_exit = True
    return 0


class _NotTo(logging.Filter):
    """Drops httpx's line for each request to ``url`` (the playground's, to the add-on)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url + "/"

    def filter(self, record: logging.LogRecord) -> bool:
        return self.url not in record.getMessage()


def _start_playground(addon_url: str, port: int) -> uvicorn.Server:
    hipchat = FakeHipChat(base_url=f"http://{_HOST}:{port}")
    app = playground_app(PlaygroundRoom(hipchat, addon_url))
    server = uvicorn.Server(
        uvicorn.Config(app, host=_HOST, port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="playground", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"the playground could not listen on {_HOST}:{port}; try --hipchat-port")
        time.sleep(0.05)
    return server


def _run_addon(settings: Settings, port: int, reload: bool) -> None:
    from addon.server import uvicorn_options

    watched = [
        str(p) for p in (settings.integrations_path, settings.capabilities_path) if p.is_dir()
    ]
    uvicorn.run(
        "addon.app:create_app_from_environ",
        factory=True,
        host=_HOST,
        port=port,
        log_config=None,
        reload=reload,
        reload_dirs=watched if reload else None,
        reload_includes=["*.py", "*.json", "*.html", "*.css", "*.js"] if reload else None,
        **uvicorn_options(settings),
    )
