"""The ``hipchat-addon`` command line.

``serve`` runs the add-on under uvicorn; ``new`` scaffolds a project; ``check`` validates the
settings, the integrations and the descriptor, probes the store and lists the commands;
``descriptor`` prints the descriptor; ``storage`` exports, imports or erases the integrations'
storage, and migrates it (``migrate-global``, ``migrate-keys``). The older ``hipchat-integration``
server's command line works too, with or without ``serve``: its flags (``-p``, ``-i``, ``-t``,
``-l``) and its positional form ``PORT INTEGRATIONS_PATH [NAME:TOKEN | ROOM_ID:INTEGRATION:TOKEN
...]``.
Flags only override the matching ``ADDON_*`` variables; ``Settings`` reads them in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import difflib
import json
import logging
import logging.config
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from addon.errors import ConfigError, IntegrationError, RequestError, StoreUnavailable
from addon.settings import Secret, Settings

if TYPE_CHECKING:
    from addon.integrations import Integration

__all__ = [
    "Checked",
    "display_store_url",
    "main",
    "startup_summary",
    "startup_warnings",
    "validate",
]

log = logging.getLogger("addon")

COMMANDS = ("serve", "dev", "new", "check", "descriptor", "storage")
DEPRECATED = {"check-config": "check"}  # hidden aliases, kept for one release
DESCRIPTION = "An Atlassian Connect add-on server for HipChat."
APP = "addon.app:create_app_from_environ"  # uvicorn's factory, in the serving process(es)
SERVE_USAGE = (
    "%(prog)s [--host H] [-p PORT] [--workers N] [-i DIR] [-t TOKEN ...] [-l FILE] "
    "[--no-store-check]\n"
    "       %(prog)s PORT INTEGRATIONS_PATH [NAME:TOKEN | ROOM_ID:INTEGRATION:TOKEN ...]"
)


class UsageError(Exception):
    """Bad arguments: the message already holds the usage line."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of exiting, so ``main`` returns a status."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


def _version() -> str:
    try:
        return version("hipchat-addon")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _common(*, tokens: bool = True) -> _Parser:
    """``-i``, and ``-t`` where static tokens matter (serve, dev, check; not descriptor/storage)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "-i", "--integrations", help="integrations folder (ADDON_INTEGRATIONS_PATH)"
    )
    if not tokens:
        return common
    common.add_argument(
        "-t",
        "--tokens",
        nargs="+",
        metavar="TOKEN",
        help="static tokens NAME:TOKEN or ROOM_ID:INTEGRATION:TOKEN (ADDON_TOKENS)",
    )
    return common


def _store_check() -> _Parser:
    flag = _Parser(add_help=False)
    flag.add_argument(
        "--no-store-check",
        dest="store_check",
        action="store_false",
        help="start even when the store (ADDON_STORE_URL) does not answer",
    )
    return flag


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The program's parser, and its ``serve`` parser (whose usage the older form's errors show)."""
    parser = _Parser(prog="hipchat-addon", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = _add_serve(sub)
    dev = sub.add_parser(
        "dev",
        parents=[_common()],
        help="the add-on with reload, a fake HipChat, and a playground room in the browser",
        description="Serve the add-on with reload, a fake HipChat beside it, and a playground "
        "page that is a HipChat room in the browser. Prints the URLs; opens nothing.",
    )
    dev.add_argument("--port", type=int, default=8000, help="the add-on's port (default 8000)")
    dev.add_argument("--hipchat-port", type=int, default=8001, help="the fake's (default 8001)")
    dev.add_argument("--no-reload", action="store_true", help="do not restart on file changes")
    new = sub.add_parser(
        "new",
        help="create a project folder that serves and tests at once",
        description="Create the folder NAME with an add-on project: capabilities, a /hello "
        "integration, its test, a Dockerfile with docker-compose.yml, and a README.",
    )
    new.add_argument("name", metavar="NAME", help="the add-on key: lowercase letters, digits, -")
    check = "Validate the settings, the integrations and the descriptor as serve does, probe "
    check += "the store, and list the commands."
    sub.add_parser(
        "check",
        parents=[_common(), _store_check()],
        help="validate everything serve validates; list the commands",
        description=check,
    )
    # Without help=, argparse leaves the deprecated alias out of --help.
    sub.add_parser("check-config", parents=[_common(), _store_check()], description=check)
    sub.add_parser(
        "descriptor",
        parents=[_common(tokens=False)],
        help="print the descriptor as JSON",
        description="Print the capability descriptor, as served at /atlassian-connect.json.",
    )
    storage = sub.add_parser(
        "storage",
        parents=[_common(tokens=False)],
        help="export, import, erase or migrate the integrations' storage",
        description="Export, import or erase every integration's storage (JSON); "
        "migrate-global moves the older scripts' shared entries to one installation (--to), "
        "migrate-keys renames keys stored before hash tags (run once after upgrading).",
    )
    storage.add_argument(
        "action", choices=("export", "import", "erase", "migrate-global", "migrate-keys")
    )
    storage.add_argument("file", nargs="?", help="JSON file (export: default stdout; import: -)")
    storage.add_argument(
        "--to", metavar="OAUTH_ID", help="migrate-global: the installation that gets the entries"
    )
    return parser, serve


def _add_serve(sub: Any) -> argparse.ArgumentParser:
    serve = sub.add_parser(
        "serve",
        parents=[_common(), _store_check()],
        usage=SERVE_USAGE,
        help="run the add-on server",
        description="Run the add-on server. The older hipchat-integration server's positional "
        "form works too: PORT INTEGRATIONS_PATH [NAME:TOKEN | ROOM_ID:INTEGRATION:TOKEN ...].",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("-p", "--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("-l", "--logfile", help="write logs to this file instead of stderr")
    serve.add_argument("legacy_port", nargs="?", metavar="PORT", help=argparse.SUPPRESS)
    serve.add_argument(
        "legacy_integrations", nargs="?", metavar="INTEGRATIONS_PATH", help=argparse.SUPPRESS
    )
    serve.add_argument("legacy_tokens", nargs="*", metavar="TOKEN", help=argparse.SUPPRESS)
    parser: argparse.ArgumentParser = serve
    return parser


def _with_command(argv: list[str]) -> list[str]:
    """``argv`` starting with a command: the older server had none (``-p 8000``, ``8000 dir``)."""
    if not argv:
        return ["serve"]
    first = argv[0]
    if first in COMMANDS or first in DEPRECATED or first in ("-h", "--help", "--version"):
        return argv
    if first.startswith("-") or first.isdigit():
        return ["serve", *argv]
    close = difflib.get_close_matches(first, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the commands are {', '.join(COMMANDS)}"
    raise UsageError(f"hipchat-addon: unknown command {first!r}; {hint}")


def _legacy_serve_arguments(args: argparse.Namespace, serve: argparse.ArgumentParser) -> None:
    """Fold the positional ``PORT INTEGRATIONS_PATH TOKEN...`` form into the flags."""
    if args.legacy_port is not None:
        if args.port is not None:
            serve.error("give the port once: as PORT or as -p/--port")
        if not args.legacy_port.isdigit() or not 0 < int(args.legacy_port) < 65536:
            serve.error(f"PORT {args.legacy_port!r} is not a port number (1-65535)")
        args.port = int(args.legacy_port)
    if args.legacy_integrations is not None:
        if args.integrations:
            serve.error("give the integrations folder once: as INTEGRATIONS_PATH or as -i")
        args.integrations = args.legacy_integrations
    for token in args.legacy_tokens:
        parts = token.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            serve.error("a token is neither NAME:TOKEN nor ROOM_ID:INTEGRATION:TOKEN")
    args.tokens = [*(args.tokens or ()), *args.legacy_tokens] or None
    args.port = 8000 if args.port is None else args.port
    if args.workers < 1:
        serve.error(f"--workers {args.workers}: serve needs at least one worker")


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if getattr(args, "integrations", None):
        env["ADDON_INTEGRATIONS_PATH"] = args.integrations
    if getattr(args, "tokens", None):
        env["ADDON_TOKENS"] = ",".join(args.tokens)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hipchat-addon`` and ``python -m addon``; returns the exit status."""
    try:
        status = _main(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # `hipchat-addon descriptor | head -1`: the reader left. Say nothing; keep Python's
        # final flush of stdout from failing a second time.
        with contextlib.suppress(OSError, ValueError):  # stdout may not be a real file
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as exc:  # --help, --version, and uvicorn when it cannot bind
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)


def _main(argv: list[str]) -> int:
    parser, serve = _parsers()
    try:
        args = parser.parse_args(_with_command(argv))
        if args.command == "serve":
            _legacy_serve_arguments(args, serve)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command in DEPRECATED:
        print(
            f"hipchat-addon: {args.command!r} is deprecated and goes away in the next release; "
            f"use {DEPRECATED[args.command]!r}",
            file=sys.stderr,
        )
        args.command = DEPRECATED[args.command]
    try:
        return _run(args)
    except BrokenPipeError:
        raise  # an OSError, but not an error: main() ends quietly
    # ValueError: a storage import file that is not JSON.
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


def _run(args: argparse.Namespace) -> int:
    if args.command == "new":
        from addon.scaffold import create_project

        return create_project(args.name, Path.cwd())
    env = _environment(args)
    if args.command == "dev":
        from addon.testing.devserver import run_dev

        return run_dev(args, env)
    settings = Settings.from_environ(env)
    if args.command == "serve":
        return _serve(args, settings, env)
    if args.command == "storage":
        return asyncio.run(_storage(args.action, args.file, settings, to=args.to))
    if args.command == "descriptor":
        return _print_descriptor(settings)
    return _check(settings, store_check=args.store_check)


@dataclasses.dataclass(frozen=True)
class Checked:
    """What ``validate`` found: the integrations (with ``/help``) and the descriptor."""

    integrations: list[Integration]
    descriptor: dict[str, Any]


def validate(settings: Settings, *, store_check: bool) -> Checked:
    """Everything ``serve`` checks before it binds, and ``check`` reports: one function for both.

    The capabilities, the integrations (import, duplicate ``/help``, command conflicts), the
    descriptor, and, unless ``store_check`` is False, that the store answers.
    """
    from addon.app import build_addon_descriptor, load_all_integrations
    from addon.integrations import check_unique

    _require_capabilities(settings)
    integrations = load_all_integrations(settings)
    check_unique(integrations)  # the dispatcher refuses the same at start-up
    descriptor = build_addon_descriptor(settings, integrations=integrations)
    if store_check:
        asyncio.run(_probe_store(settings.store_url, settings.store_password))
    return Checked(integrations, descriptor)


def _require_capabilities(settings: Settings) -> None:
    path = settings.capabilities_path / "addon.json"
    if not path.is_file():
        raise ConfigError(
            f"no {path} in {Path.cwd()}: run this in an add-on project folder, set "
            "ADDON_CAPABILITIES_PATH, or create a project with 'hipchat-addon new NAME'"
        )


async def _probe_store(url: str, password: Secret | None) -> None:
    from addon.store import open_store

    store = open_store(url, password=password)
    try:
        await store.ping()
    except StoreUnavailable as exc:
        raise StoreUnavailable(
            f"ADDON_STORE_URL {display_store_url(url)}: {exc}; or fix ADDON_STORE_URL, or pass "
            "--no-store-check to start without the store"
        ) from None
    finally:
        await store.close()


def display_store_url(url: str) -> str:
    """``url`` without its password, fit for logs and messages."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _print_descriptor(settings: Settings) -> int:
    from addon.app import build_addon_descriptor

    print(json.dumps(build_addon_descriptor(settings), indent=2, sort_keys=True))
    return 0


def _check(settings: Settings, *, store_check: bool) -> int:
    checked = validate(settings, store_check=store_check)
    store = "answers" if store_check else "not probed (--no-store-check)"
    print(f"configuration OK: {checked.descriptor['key']} at {settings.base_url}")
    print(f"store {display_store_url(settings.store_url)} {store}")
    rows = [
        (command.usage, integration.key, command.help)
        for integration in checked.integrations
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


def startup_summary(settings: Settings, checked: Checked, *, workers: int) -> str:
    """The one line ``serve`` logs at start-up: where it serves from, and what."""
    from addon.descriptor import DESCRIPTOR_PATH, UI_EXTENSIONS, UI_PAGES

    commands = sorted(
        f"/{name}" for integration in checked.integrations for name in integration.commands
    )
    capabilities = checked.descriptor["capabilities"]
    extensions = [
        f"{kind} x{len(value) if isinstance(value, list) else 1}"
        for kind, value in sorted(capabilities.items())
        if kind in (*UI_EXTENSIONS, *UI_PAGES)
    ]
    sealed = "sealed (ADDON_SECRET_KEY)" if settings.secret_key else "not sealed"
    return (
        f"hipchat-addon {_version()}: store {display_store_url(settings.store_url)}; "
        f"base URL {settings.base_url}; descriptor {settings.url_for(DESCRIPTOR_PATH)}; "
        f"workers {workers}; commands {' '.join(commands) or 'none'}; "
        f"extensions {', '.join(extensions) or 'none'}; secrets {sealed}"
    )


def startup_warnings(settings: Settings) -> list[str]:
    """What ``serve`` warns about at start-up (the configuration works, but think twice)."""
    warnings = []
    if settings.secret_key is None and not settings.store_url.startswith("sqlite:"):
        warnings.append(
            "ADDON_SECRET_KEY is unset: installation secrets and tokens are stored unencrypted "
            "in the store; set it to a long random value"
        )
    return warnings


def _serve(args: argparse.Namespace, settings: Settings, env: dict[str, str]) -> int:
    import uvicorn

    from addon.dispatch import NOTICE_GRACE
    from addon.logs import logging_config, resolve_format
    from addon.server import uvicorn_options
    from addon.supervisor import Supervisor, WorkerSpec

    if args.workers > 1 and settings.store_url.startswith("sqlite:"):
        raise ConfigError(
            f"--workers {args.workers} needs a shared store, and SQLite is for one process; "
            "set ADDON_STORE_URL to a redis:// URL, or serve with one worker"
        )
    checked = validate(settings, store_check=args.store_check)  # fail before binding
    log_format = resolve_format(settings.log_format, None if args.logfile else sys.stderr)
    config = logging_config(settings.log_level, log_format, logfile=args.logfile)
    logging.config.dictConfig(config)
    log.info("%s", startup_summary(settings, checked, workers=args.workers))
    for warning in startup_warnings(settings):
        log.warning("%s", warning)
    # Workers are separate processes that read the environment themselves: hand them our flags.
    os.environ.update({k: v for k, v in env.items() if k.startswith("ADDON_")})
    options = {
        "factory": True,
        "log_config": config,  # applied again in each worker process
        "proxy_headers": True,
        **uvicorn_options(settings),
    }
    grace = options["timeout_graceful_shutdown"]  # ADDON_SHUTDOWN_TIMEOUT, whole seconds
    with _metrics_dir(args.workers, settings.metrics_dir):
        if args.workers == 1:
            uvicorn.run(APP, host=args.host, port=args.port, **options)
            return 0
        spec = WorkerSpec(APP, args.host, args.port, options)
        # A worker's drain: uvicorn's grace for running requests (the handlers run in them),
        # then the app's lifespan shutdown (the dispatcher's grace, then NOTICE_GRACE for the
        # notices of the handlers it stopped), then closing the store: all that, and a margin.
        stop_timeout = 2 * grace + NOTICE_GRACE + 5
        return Supervisor(spec, args.workers, stop_timeout=stop_timeout).run()


@contextlib.contextmanager
def _metrics_dir(workers: int, given: Path | None) -> Iterator[None]:
    """Under several workers, a fresh ``PROMETHEUS_MULTIPROC_DIR`` (unless one is given).

    prometheus-client then keeps each worker's values in files there, and every worker's
    ``/metrics`` sums them. The directory must start empty and is removed when serving ends.
    """
    if workers <= 1 or given is not None:  # settings.metrics_dir: PROMETHEUS_MULTIPROC_DIR
        yield
        return
    path = tempfile.mkdtemp(prefix="hipchat-addon-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(path, ignore_errors=True)
