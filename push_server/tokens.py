"""Dashboard access tokens: who may open /ws, which channels it may read, and until when.

A token is a JWT (RFC 7519, made and checked by PyJWT) signed with HS256 and
these claims:

* ``aud``       always ``"rtdash.push"``: a token made for something else with the same secret is refused;
* ``iat``, ``exp`` when it was made and when it stops opening (and keeping open) a WebSocket;
* ``channels``  the channels it may read: ``["*"]`` for all, else names of rtdash.channels.CHANNELS;
* ``sub``       optional: who it was given to (logged with the connection).

The secret is RTDASH_PUSH_TOKEN_SECRET (at least 32 bytes) or, when that is
unset, the file ``<home>/keys/push_token_secret``, generated on first use
(rtdash.keys.ensure_secret: mode 0600 in a 0700 folder). Every push server
process behind one load balancer, and whoever makes tokens, must use the same
secret. Checking pins the algorithm (never ``none``, never another one) and
allows a few seconds of clock difference (RTDASH_PUSH_TOKEN_LEEWAY_SECONDS).
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

import jwt

from rtdash.channels import CHANNELS
from rtdash.keys import ensure_secret
from rtdash.settings import Settings

ALGORITHM = "HS256"
AUDIENCE = "rtdash.push"
ALL_CHANNELS = "*"
SECRET_FILE = "push_token_secret"
MIN_SECRET_BYTES = 32
DEFAULT_TTL_SECONDS = 8 * 3600
MAX_TTL_SECONDS = 366 * 86400
_TTL = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(ValueError):
    """A token that opens nothing; `reason` is the short text sent to the client."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: its channels (or all) until `expires_at` (Unix seconds)."""

    channels: frozenset[str]
    expires_at: float
    subject: str | None = None

    @property
    def all_channels(self) -> bool:
        return ALL_CHANNELS in self.channels

    def allows(self, channel: str) -> bool:
        return self.all_channels or channel in self.channels


def parse_ttl(text: str) -> int:
    """Seconds of a lifetime written as ``90``, ``90s``, ``30m``, ``8h`` or ``7d`` (several parts: ``1h30m``)."""
    cleaned = text.strip().lower()
    parts = _TTL.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"bad lifetime {text!r}: write it like 90s, 30m, 8h, 7d or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"lifetime {text!r} must be more than 0 and at most {MAX_TTL_SECONDS // 86400} days")
    return seconds


def parse_channels(text: str | None) -> list[str]:
    """The channels of a comma list; empty or ``*`` means all. An unknown name is a ValueError naming the known."""
    names = sorted({c.strip() for c in (text or "").split(",") if c.strip()})
    if not names or ALL_CHANNELS in names:
        return [ALL_CHANNELS]
    unknown = [c for c in names if c not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel(s) {', '.join(unknown)}; known: {', '.join(CHANNELS)} (or * for all)")
    return names


def token_secret(settings: Settings) -> bytes:
    """The signing secret of the settings: RTDASH_PUSH_TOKEN_SECRET, else the generated file under <home>/keys."""
    if settings.push_token_secret:
        secret = settings.push_token_secret.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"RTDASH_PUSH_TOKEN_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                             f"(it has {len(secret)}); e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
        return secret
    return ensure_secret(settings.keys_dir / SECRET_FILE, lambda: secrets.token_hex(32).encode()).strip()


class Tokens:
    """Makes and checks tokens with one secret."""

    def __init__(self, secret: bytes, *, leeway: float = 5.0):
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        return cls(token_secret(settings), leeway=settings.push_token_leeway_seconds)

    def issue(self, *, ttl: int = DEFAULT_TTL_SECONDS, channels: list[str] | None = None,
              subject: str | None = None, now: float | None = None) -> str:
        """A token for `channels` (all when None) valid for `ttl` seconds from `now`."""
        issued = int(time.time() if now is None else now)
        claims = {"aud": AUDIENCE, "iat": issued, "exp": issued + int(ttl),
                  "channels": parse_channels(",".join(channels or []))}
        if subject:
            claims["sub"] = subject
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str | None) -> Grant:
        """The grant of `token`, or TokenError: missing, malformed, wrongly signed, expired, or without channels."""
        if not token:
            raise TokenError("token missing", "pass one as the token query parameter (`rtdash token` makes one)")
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE, leeway=self.leeway,
                                options={"require": ["exp", "iat", "aud", "channels"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", "get a new one (`rtdash token`)") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError("token invalid", str(exc)[:200]) from None
        channels = claims["channels"]
        if (not isinstance(channels, list) or not channels or len(channels) > len(CHANNELS) + 1
                or not all(isinstance(c, str) for c in channels)):
            raise TokenError("token invalid", "channels must be a list of channel names")
        subject = claims.get("sub")
        return Grant(frozenset(channels), float(claims["exp"]), subject if isinstance(subject, str) else None)
