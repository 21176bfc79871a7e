"""Message shapes of the dashboard WebSocket (DESIGN.md), and nothing else.

Server -> client: an envelope ``{"channel": str, "seq": int, "data": {...}}``;
``seq`` grows by one per channel (numbered in Redis by the job), so a client
can ignore anything not newer than what it has. Client -> server: optionally
``{"subscribe": ["orders.today", ...]}`` to choose channels (default: all);
each newly subscribed channel's snapshot is sent first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

MAX_CLIENT_MESSAGE_BYTES = 4096
MAX_CHANNELS = 64


class ProtocolError(ValueError):
    """A message that breaks the protocol; the text says how."""


@dataclass(frozen=True)
class Envelope:
    channel: str
    seq: int
    text: str  # the exact JSON sent to clients, encoded once for every subscriber


def encode_envelope(channel: str, seq: int, data: dict) -> str:
    """The JSON text of an envelope (what the jobs write to Redis), checked like an incoming one."""
    return parse_envelope(json.dumps({"channel": channel, "seq": seq, "data": data},
                                     separators=(",", ":"), ensure_ascii=False)).text


def parse_envelope(raw: str | bytes) -> Envelope:
    """Check an envelope coming from Redis (snapshot key or pub/sub)."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"envelope is not JSON: {exc}") from exc
    if not isinstance(message, dict) or set(message) != {"channel", "seq", "data"}:
        raise ProtocolError("envelope must have exactly channel, seq and data")
    channel, seq, data = message["channel"], message["seq"], message["data"]
    if not isinstance(channel, str) or not channel:
        raise ProtocolError("channel must be a non-empty string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError("seq must be a non-negative integer")
    if not isinstance(data, dict):
        raise ProtocolError("data must be an object")
    text = raw.decode() if isinstance(raw, bytes) else raw
    return Envelope(channel, seq, text)


def parse_client_message(raw: str | bytes) -> list[str]:
    """The channels a client asks for with {"subscribe": [...]}."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("message is not JSON") from exc
    if not isinstance(message, dict) or set(message) != {"subscribe"}:
        raise ProtocolError('expected {"subscribe": [channel, ...]}')
    channels = message["subscribe"]
    if (not isinstance(channels, list) or len(channels) > MAX_CHANNELS
            or not all(isinstance(c, str) and 0 < len(c) <= 128 for c in channels)):
        raise ProtocolError(f"subscribe takes a list of at most {MAX_CHANNELS} channel names")
    return channels
