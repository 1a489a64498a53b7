"""The ``isotope`` command: a thin layer over the same manager and engine the API uses.

    isotope doctor                 configuration (with sources), connection, schema, counts, a round trip
    isotope migrate                apply schema migrations explicitly
    isotope sessions list|show|delete|cleanup|stats
    isotope sessions export|import|fork   JSON Lines export and import, copies (see app/cli/transfer.py)
    isotope import-files [DATA_DIR]    move the former file store's sessions into PostgreSQL
    isotope chat                   talk to the engine (see app/cli/chat.py)
    isotope serve                  the HTTP API (see app/api)

Errors print as one line per cause, never a traceback or a password; exit status 0 means healthy
or done, 1 a failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape

from app.cli import doctor as doctor_cmd
from app.cli import sessions as sessions_cmd
from app.cli import transfer as transfer_cmd
from app.cli.terminal import shown
from app.errors import ConfigError, IsotopeError
from app.masking import install_log_filter, remember_settings, scrub

app = typer.Typer(
    name="isotope",
    help="Isotope: an agent engine whose conversations live durably in PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Typer 0.2x raises the exceptions of its own bundled copy of click (``typer._click``), not those of
# the installed click: catch the bases of both. typer.BadParameter is a bundled ClickException in
# the versions that bundle one, and the installed click's in those that do not.
_CLICK_ERRORS: tuple[type[Exception], ...] = tuple(
    {click.ClickException, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})
_EXITS: tuple[type[Exception], ...] = (click.exceptions.Exit, typer.Exit)
_ABORTS: tuple[type[Exception], ...] = (click.exceptions.Abort, typer.Abort)

app.add_typer(sessions_cmd.app, name="sessions")
app.command("doctor")(doctor_cmd.doctor)
app.command("migrate")(doctor_cmd.migrate)
sessions_cmd.app.command("export")(transfer_cmd.export)
sessions_cmd.app.command("import")(transfer_cmd.import_)
sessions_cmd.app.command("fork")(transfer_cmd.fork)
app.command("import-files")(transfer_cmd.import_files)


def _register_optional_commands() -> None:
    """chat and serve live in their own modules; a broken import must not take doctor down."""
    try:
        from app.cli.chat import chat
    except ImportError as exc:  # pragma: no cover - only when the engine cannot import
        logging.getLogger("isotope.cli").debug("chat unavailable: %s", exc)
    else:
        app.command("chat")(chat)
    try:
        from app.cli.serve import serve
    except ImportError as exc:
        logging.getLogger("isotope.cli").debug("serve unavailable: %s", exc)
    else:
        app.command("serve")(serve)


_register_optional_commands()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    configure_logging(logging.INFO if verbose else None)


def configure_logging(level: int | None = None) -> None:
    """Log to stderr; the level comes from ``--verbose``, else ``log_level``/ISOTOPE_LOG_LEVEL."""
    from app.config import Settings, load_settings

    settings: Settings | None = None
    with contextlib.suppress(ConfigError):
        settings = load_settings()
    if settings is not None:
        remember_settings(settings)
    if level is None:
        level = logging.getLevelName(settings.log_level.upper()) if settings is not None else logging.WARNING
    root = logging.getLogger()
    if not any(getattr(h, "_isotope", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._isotope = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    install_log_filter()
    root.setLevel(level if isinstance(level, int) else logging.WARNING)


def print_error(exc: BaseException, console: Console | None = None) -> None:
    """The error and its chain of causes, one line each (no traceback)."""
    console = console or Console(stderr=True, highlight=False)
    seen: set[int] = set()
    current: BaseException | None = exc
    prefix = "error"
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip().splitlines()[0] if str(current).strip() else type(current).__name__
        console.print(f"[red]{prefix}:[/] {shown(scrub(text))}", markup=True, soft_wrap=True)
        prefix = "  caused by"
        current = current.__cause__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except _EXITS as exc:
        return int(getattr(exc, "exit_code", 1))
    except _ABORTS:
        return 130
    except _CLICK_ERRORS as exc:
        # Bad usage (unknown command or option, missing argument): one line, exit 2.
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        Console(stderr=True, highlight=False).print(
            f"[red]error:[/] {escape(message)} (see 'isotope --help')", markup=True, soft_wrap=True)
        return int(getattr(exc, "exit_code", 2))
    except ConfigError as exc:
        print_error(exc)
        return 2
    except IsotopeError as exc:
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def dump_json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, indent=2)


if __name__ == "__main__":
    run()
