"""The ``hipchat-addon`` command line.

``serve`` runs the add-on under uvicorn; ``descriptor`` prints the descriptor; ``check`` validates
the settings, the integrations and the descriptor and lists the commands; ``storage`` exports,
imports or erases the integrations' storage. The older ``hipchat-integration`` server's flags
(``-p``, ``-i``, ``-t``, ``-l``) are accepted by ``serve`` and by the bare command, so
``hipchat-addon -p 8000`` still works.
Flags only override the matching ``ADDON_*`` variables; ``Settings`` reads them in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from addon.errors import ConfigError, IntegrationError, RequestError, StoreUnavailable
from addon.settings import Settings

__all__ = ["main"]

COMMANDS = ("serve", "descriptor", "check", "check-config", "storage")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-i", "--integrations", help="integrations folder (ADDON_INTEGRATIONS_PATH)"
    )
    common.add_argument(
        "-t",
        "--tokens",
        nargs="+",
        metavar="TOKEN",
        help="static tokens NAME:TOKEN or ROOM_ID:INTEGRATION:TOKEN (ADDON_TOKENS)",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipchat-addon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", parents=[_common()], help="run the add-on server")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("-p", "--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("-l", "--logfile", help="write logs to this file instead of stderr")
    sub.add_parser("descriptor", parents=[_common()], help="print the descriptor as JSON")
    for name in ("check", "check-config"):
        sub.add_parser(name, parents=[_common()], help="validate everything; list the commands")
    storage = sub.add_parser("storage", parents=[_common()], help="integration storage")
    storage.add_argument(
        "action", choices=("export", "import", "erase", "migrate-global", "migrate-keys")
    )
    storage.add_argument("file", nargs="?", help="JSON file (export: default stdout; import: -)")
    storage.add_argument(
        "--to", metavar="OAUTH_ID", help="migrate-global: the installation that gets the entries"
    )
    return parser


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if getattr(args, "integrations", None):
        env["ADDON_INTEGRATIONS_PATH"] = args.integrations
    if getattr(args, "tokens", None):
        env["ADDON_TOKENS"] = ",".join(args.tokens)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hipchat-addon`` and ``python -m addon``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")  # the older server had no sub-commands: `-p 8000 -i dir`
    args = _parser().parse_args(argv)
    env = _environment(args)
    try:
        settings = Settings.from_environ(env)
        if args.command == "serve":
            return _serve(args, settings, env)
        if args.command == "storage":
            return asyncio.run(_storage(args.action, args.file, settings, to=args.to))
        return _inspect(args.command, settings)
    except (
        ConfigError,
        IntegrationError,
        RequestError,
        StoreUnavailable,
        OSError,
        ValueError,
    ) as exc:
        print(f"hipchat-addon: {exc}", file=sys.stderr)
        return 2


def _inspect(command: str, settings: Settings) -> int:
    from addon.app import build_addon_descriptor, load_all_integrations

    integrations = load_all_integrations(settings)
    descriptor = build_addon_descriptor(settings, integrations=integrations)
    if command == "descriptor":
        print(json.dumps(descriptor, indent=2, sort_keys=True))
        return 0
    print(f"configuration OK: {descriptor['key']} at {settings.base_url}")
    rows = [
        (command.usage, integration.key, command.help)
        for integration in integrations
        for command in integration.commands.values()
    ]
    width = max((len(usage) for usage, _, _ in rows), default=0)
    for usage, key, text in sorted(rows):
        print(f"  {usage.ljust(width)}  [{key}] {text}")
    return 0


async def _storage(action: str, file: str | None, settings: Settings, *, to: str | None) -> int:
    from addon.admin import erase_storage, export_storage, import_storage, migrate_global
    from addon.descriptor import load_capabilities
    from addon.jsonvalue import loads as load_json
    from addon.store import Keys, open_store
    from addon.store.migration import migrate_keys

    store = open_store(settings.store_url, password=settings.store_password)
    keys = Keys(load_capabilities(settings.capabilities_path).key)
    try:
        if action == "export":
            _write(file, await export_storage(store, keys))
        elif action == "import":
            document = load_json(_read(file), what="The import file")
            print(f"imported {await import_storage(store, keys, document)} storage entries")
        elif action == "migrate-keys":
            print(f"moved {await migrate_keys(store, keys)} keys to their hash-tagged names")
        elif action == "migrate-global":
            if not to:
                raise RequestError("storage migrate-global needs --to OAUTH_ID")
            print(f"moved {await migrate_global(store, keys, to)} global storage entries to {to}")
        else:
            print(f"erased {await erase_storage(store, keys)} storage entries")
    finally:
        await store.close()
    return 0


def _read(file: str | None) -> str:
    if file in (None, "-"):
        return sys.stdin.read()
    return Path(file).read_text(encoding="utf-8")


def _write(file: str | None, text: str) -> None:
    if file in (None, "-"):
        print(text)
    else:
        Path(file).write_text(text + "\n", encoding="utf-8")


def _serve(args: argparse.Namespace, settings: Settings, env: dict[str, str]) -> int:
    import uvicorn

    from addon.app import build_addon_descriptor
    from addon.logs import configure_logging
    from addon.server import uvicorn_options

    build_addon_descriptor(settings)  # fail before binding when the descriptor is broken
    configure_logging(settings.log_level, logfile=args.logfile)
    # Workers are separate processes that read the environment themselves: hand them our flags.
    os.environ.update({k: v for k, v in env.items() if k.startswith("ADDON_")})
    uvicorn.run(
        "addon.app:create_app_from_environ",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) + 1,
        **uvicorn_options(settings),
    )
    return 0
