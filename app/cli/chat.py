"""``isotope chat``: talk to the engine in the terminal; the conversation lives in the session store.

::

    isotope chat                       # pick a recent session, or start a new one
    isotope chat --new --name demo     # start a new session
    isotope chat --session ID          # continue a session (after a restart, on another host...)
    isotope chat --session ID -m "add task: write report" -m "list tasks"   # non-interactive

With ``-m`` (repeatable) the messages are sent in order and the command exits, which is what
scripts and tests use; without ``--session`` it starts a new session. Without ``-m`` it reads
lines until end of input or ``/exit`` (piped input works too: the picker reads its answer first).
The session id is always printed, so a second run can continue the conversation. Exit status: 0,
or 1 when the session does not exist or a turn failed. ``python -m app.cli.chat`` runs the same
command.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.prompt import Prompt
from rich.table import Table

from app.cli.terminal import plain, shown
from app.core.engine import IsotopeEngine
from app.errors import IsotopeError, SessionNotFound
from app.masking import scrub

HISTORY_SHOWN = 10
PICKER_SIZE = 10
EXIT_WORDS = {"/exit", "/quit", "exit", "quit"}


def chat(
    session: Annotated[str | None, typer.Option("--session", "-s", help="Continue this session id.")] = None,
    new: Annotated[bool, typer.Option("--new", "-n", help="Start a new session.")] = False,
    message: Annotated[
        list[str] | None, typer.Option("--message", "-m", help="Send this message and exit (repeatable).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of a new session (its metadata).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log sessions, timings, the store.")] = False,
) -> None:
    """Chat with Isotope; the conversation is saved after every message."""
    console = Console(highlight=False, soft_wrap=True)
    if session and new:
        console.print("[red]--session and --new are exclusive; use one of them.[/]")
        raise typer.Exit(2)
    try:
        with IsotopeEngine(verbose=verbose) as engine:
            code = _run(engine, console, session, new, list(message or ()), name)
    except IsotopeError as exc:
        _print_causes(console, exc)
        code = 1
    raise typer.Exit(code)


def _run(
    engine: IsotopeEngine,
    console: Console,
    session: str | None,
    new: bool,
    messages: list[str],
    name: str | None,
) -> int:
    interactive = not messages
    if session is None and not new and interactive:
        session = _pick(engine, console)
    if session is None:
        session = engine.create_session(metadata={"name": name or "chat", "source": "cli"})
        console.print(f"[bold]New session[/] {shown(session)}")
    else:
        state = engine.get_session(session)
        console.print(f"[bold]Session[/] {shown(session)} ({len(state['messages'])} messages)")
        if interactive:
            _show_history(console, state["messages"][-HISTORY_SHOWN:])
    failed = False
    echo = not interactive or not sys.stdin.isatty()  # a person at a terminal already sees what they typed
    for text in messages if messages else _read_lines(console):
        if not text.strip():
            continue
        if echo:
            console.print(f"[bold cyan]you>[/] {shown(text, lines=True)}")
        failed = not _send(engine, console, session, text) or failed
    console.print(f"[dim]session id:[/] {shown(session)}")
    return 1 if failed and not interactive else 0


def _pick(engine: IsotopeEngine, console: Console) -> str | None:
    """Show recent sessions; return the chosen id, or None for a new one."""
    recent = engine.list_sessions(limit=PICKER_SIZE)
    if not recent:
        return None
    table = Table(title="Recent sessions")
    for column in ("#", "session id", "name", "messages", "last updated"):
        table.add_column(column)
    for number, item in enumerate(recent, start=1):
        updated = item["last_updated"]
        table.add_row(
            str(number),
            shown(item["session_id"]),
            shown((item.get("metadata") or {}).get("name", "")),
            str(item.get("message_count", "")),
            updated.strftime("%Y-%m-%d %H:%M") if hasattr(updated, "strftime") else str(updated),
        )
    console.print(table)
    choices = [str(n) for n in range(0, len(recent) + 1)]
    picked = Prompt.ask("Session number (0 for a new session)", choices=choices, default="1", console=console)
    return None if picked == "0" else recent[int(picked) - 1]["session_id"]


def _read_lines(console: Console) -> Any:
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ") if sys.stdin.isatty() else input()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if text.strip().lower() in EXIT_WORDS:
            return
        yield text


def _send(engine: IsotopeEngine, console: Console, session_id: str, text: str) -> bool:
    """One turn, rendered as it streams. True when it was saved."""
    speaking = False  # inside an "isotope>" line
    streamed = False
    for event in engine.resume_workflow(user_input=text, session_id=session_id, stream=True):
        kind = event["type"]
        if kind in ("token", "message") and not speaking and not (kind == "message" and streamed):
            console.print("[bold green]isotope>[/] ", end="")
            speaking = True
        if kind == "token":
            console.out(plain(event["content"], lines=True), end="", highlight=False)
            streamed = True
        elif kind == "message" and not streamed:
            console.out(plain(event["content"], lines=True), end="", highlight=False)
        elif kind in ("tool_call", "tool_result"):
            if speaking:
                console.print()
            speaking = streamed = False
            console.print(_tool_line(event))
        elif kind == "error":
            console.print(
                f"\n[red]error:[/] {shown(event['message'])}"
                if speaking
                else f"[red]error:[/] {shown(event['message'])}"
            )
            return False
        elif kind == "done":
            end = "\n" if speaking else ""
            console.print(f"{end}[dim]  (saved: version {event['version']}, {event['message_count']} messages)[/]")
    return True


def _tool_line(event: dict[str, Any]) -> str:
    if event["type"] == "tool_call":
        args = ", ".join(f"{k}={v!r}" for k, v in event["args"].items())
        return f"  [dim]→ {shown(event['name'])}({shown(_one_line(args))})[/]"
    style = "red" if event["status"] == "error" else "dim"
    return f"  [{style}]← {shown(_one_line(event['content']))}[/]"


def _show_history(console: Console, messages: list[Any]) -> None:
    for message in messages:
        if message.type == "human":
            console.print(f"[cyan]you>[/] {shown(message.text, lines=True)}")
        elif message.type == "ai" and message.text:
            console.print(f"[green]isotope>[/] {shown(message.text, lines=True)}")


def _one_line(text: str, width: int = 100) -> str:
    flat = " | ".join(line for line in text.splitlines() if line.strip())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_causes(console: Console, exc: BaseException) -> None:
    prefix = "error"
    seen: BaseException | None = exc
    while seen is not None:
        console.print(f"[red]{prefix}:[/] {shown(scrub(str(seen)))}")
        prefix = "  caused by"
        seen = seen.__cause__
    if isinstance(exc, SessionNotFound):
        console.print("Run `isotope chat` without --session to pick or start one.")


app = typer.Typer(add_completion=False, help="Chat with Isotope.")
app.command("chat")(chat)

if __name__ == "__main__":
    typer.run(chat)
