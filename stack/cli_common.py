"""What the `rtdash` commands share: the console they print to, the settings, the demo provider's key, and
starting, showing and stopping a supervised set of processes (`rtdash up`, `demo`, `cluster up`)."""
from __future__ import annotations

import signal
import threading

import click
from rich.console import Console
from rich.table import Table

from rtdash.settings import Settings

console = Console()


def settings_from_env() -> Settings:
    """The RTDASH_* settings; a bad one is a clear error of the command, not a traceback."""
    try:
        return Settings()
    except ValueError as exc:
        raise click.ClickException(f"bad RTDASH_* setting: {exc}") from exc


def private_key(settings: Settings):
    """The demo provider's private key, or a clear error saying how to get one."""
    from rtdash.keys import KeyFileError, load_private_key

    try:
        return load_private_key(settings.provider_private_key_path)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc


def wait_for_stop() -> threading.Event:
    """Set on Ctrl-C, on SIGTERM (`rtdash down`, `rtdash cluster down`) and when the terminal closes (SIGHUP):
    each stops what the command started."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def start_supervised(stack, what: str, column: str) -> None:
    """Start `stack` (a supervised stack.runner.Stack: a process that dies is reported here at once and
    restarted with growing pauses) under a progress line, then print a table of what runs; a start that
    fails is the command's clear error."""
    from .runner import StackError

    try:
        with console.status(f"starting the {what}") as status:
            stack.start(on_step=status.update)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"rtdash {what}")
    for col in (column, "address", "log"):
        table.add_column(col)
    for service in stack.services:
        table.add_row(service.name, service.address, str(service.log_path))
    console.print(table)


def stop_with_progress(stack, what: str) -> None:
    """Stop every process of `stack`; writing to a closed terminal fails, and the stack is stopped all the same."""
    try:
        with console.status(f"stopping the {what}"):
            stack.stop()
    except OSError:
        stack.stop()


def report_line(line: str) -> None:
    """How a supervised stack reports a process that died or came back: one bold line."""
    console.print(line, style="bold yellow", markup=False, highlight=False)
