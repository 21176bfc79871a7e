"""Dashboard tokens for tests: a fixed secret for in-process apps, and /ws URLs that carry a token.

A test that starts a push server process mints with `token_for(settings)`: the
same settings (home, or RTDASH_PUSH_TOKEN_SECRET) give the same secret as the
process's, generated under <home>/keys by whichever comes first.
"""
from __future__ import annotations

from push_server.tokens import Tokens
from rtdash.settings import Settings

SECRET = "secret-of-the-dashboard-tests-0123456789abcdef-0123456789abcdef!"


def fixed_tokens(leeway: float = 5.0) -> Tokens:
    """Tokens made and checked with SECRET."""
    return Tokens(SECRET.encode(), leeway=leeway)


def token_for(settings: Settings, **issue) -> str:
    """A token from the secret of `settings` (all channels, 8 hours unless `issue` says otherwise)."""
    return Tokens.from_settings(settings).issue(**issue)


def with_token(url: str, token: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}token={token}"


def ws_url(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, **issue) -> str:
    """ws://host:port/ws?token=... for the push server of `settings`."""
    return with_token(f"ws://{host}:{port or settings.push_port}/ws", token_for(settings, **issue))
