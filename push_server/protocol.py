"""Message shapes of the dashboard WebSocket (DESIGN.md), and nothing else.

Server -> client: an envelope ``{"channel": str, "seq": int, "data": {...}}``;
``seq`` grows by one per channel (numbered in Redis by the job), so a client
can ignore anything not newer than what it has. Client -> server: optionally
``{"subscribe": ["orders.today", ...]}`` to choose channels (default: all);
each newly subscribed channel's snapshot is sent first.

Both directions' incoming JSON (envelopes read from Redis, messages from
browsers) is checked by a pydantic model; whatever breaks the shape raises
`ProtocolError` with one clear sentence per kind of mistake, and the caller
drops the message (Redis) or closes the socket with code 1003 (browser).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

MAX_CLIENT_MESSAGE_BYTES = 4096
MAX_CHANNELS = 64
MAX_CHANNEL_NAME = 128


class ProtocolError(ValueError):
    """A message that breaks the protocol; the text says how."""


@dataclass(frozen=True)
class Envelope:
    channel: str
    seq: int
    text: str  # the exact JSON sent to clients, encoded once for every subscriber


class EnvelopeMessage(BaseModel):
    """An envelope as the jobs write it: exactly these three fields, types as they are (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel: Annotated[str, StringConstraints(min_length=1)]
    seq: Annotated[int, Field(ge=0)]
    data: dict[str, Any]


class SubscribeMessage(BaseModel):
    """What a browser may send: the channels it wants, at most MAX_CHANNELS names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subscribe: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHANNEL_NAME)]],
                         Field(max_length=MAX_CHANNELS)]


_ENVELOPE_ERRORS = {
    "": "envelope must have exactly channel, seq and data",
    "channel": "channel must be a non-empty string",
    "seq": "seq must be a non-negative integer",
    "data": "data must be an object",
}
_SUBSCRIBE_ERRORS = {
    "": 'expected {"subscribe": [channel, ...]}',
    "subscribe": f"subscribe takes a list of at most {MAX_CHANNELS} channel names "
                 f"of 1 to {MAX_CHANNEL_NAME} characters",
}


Message = TypeVar("Message", bound=BaseModel)


def _validated(model: type[Message], raw: str | bytes, errors: dict[str, str], what: str) -> Message:
    """`raw` parsed and checked by `model`, or the ProtocolError naming the first thing wrong."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise ProtocolError(f"{what} is not JSON ({first['msg'].removeprefix('Invalid JSON: ')})") from None
        field = str(first["loc"][0]) if first["loc"] else ""
        if first["type"] in ("missing", "extra_forbidden") or field not in errors:
            field = ""
        raise ProtocolError(errors[field]) from None


def encode_envelope(channel: str, seq: int, data: dict) -> str:
    """The JSON text of an envelope (what the jobs write to Redis), checked like an incoming one."""
    return parse_envelope(json.dumps({"channel": channel, "seq": seq, "data": data},
                                     separators=(",", ":"), ensure_ascii=False)).text


def parse_envelope(raw: str | bytes) -> Envelope:
    """Check an envelope coming from Redis (snapshot key or pub/sub); its text is kept as it came."""
    message = _validated(EnvelopeMessage, raw, _ENVELOPE_ERRORS, "envelope")
    text = raw.decode() if isinstance(raw, bytes) else raw
    return Envelope(message.channel, message.seq, text)


def parse_client_message(raw: str | bytes) -> list[str]:
    """The channels a client asks for with {"subscribe": [...]}."""
    return _validated(SubscribeMessage, raw, _SUBSCRIBE_ERRORS, "message").subscribe
