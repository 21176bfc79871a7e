"""`rtdash token`: a token that opens the dashboard's WebSocket, and the link that carries it.

The token is printed alone on the last line of standard output (``TOKEN=$(rtdash
token)``); what it allows and the dashboard link, with the token in the link's
fragment (which no browser sends to a server), go to standard error.
"""
from __future__ import annotations

from datetime import datetime, timezone

import click

from rtdash.settings import Settings

from .cli_common import settings_from_env

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def dashboard_url(settings: Settings, token: str | None = None) -> str:
    """The dashboard's address (loopback when the push server binds every interface), with `token` in the fragment."""
    host = "127.0.0.1" if settings.bind_host in WILDCARD_HOSTS else settings.bind_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.push_port}/" + (f"#token={token}" if token else "")


def make_token(settings: Settings, *, ttl: str = "8h", channels: str | None = None,
               subject: str | None = None) -> tuple[str, int, list[str]]:
    """(token, lifetime in seconds, channels) made with the settings' secret; ValueError for a bad lifetime,
    channel or secret."""
    from push_server.tokens import Tokens, parse_channels, parse_ttl

    seconds = parse_ttl(ttl)
    names = parse_channels(channels)
    return Tokens.from_settings(settings).issue(ttl=seconds, channels=names, subject=subject), seconds, names


@click.command()
@click.option("--ttl", default="8h", show_default=True, help="How long it opens the dashboard: 90s, 30m, 8h, 7d.")
@click.option("--channels", help="Comma list of the channels it may read (default: all).")
@click.option("--subject", help="Who it is for (shown in the push server's log).")
def token(ttl: str, channels: str | None, subject: str | None) -> None:
    """Print a token for the dashboard WebSocket (/ws?token=...) on the last line, and a link to the dashboard."""
    settings = settings_from_env()
    try:
        text, seconds, names = make_token(settings, ttl=ttl, channels=channels, subject=subject)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    until = datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() + seconds, timezone.utc)
    click.echo(f"channels: {', '.join(names) if names != ['*'] else 'all'}; "
               f"valid until {until:%Y-%m-%d %H:%M:%S} UTC", err=True)
    click.echo(f"dashboard: {dashboard_url(settings, text)}", err=True)
    click.echo(text)
