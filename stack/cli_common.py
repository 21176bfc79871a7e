"""What the `rtdash` commands share: the console they print to, the settings, the demo provider's key."""
from __future__ import annotations

import click
from rich.console import Console

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
