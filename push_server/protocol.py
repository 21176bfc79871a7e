"""Message shapes of the dashboard WebSocket (DESIGN.md), and how two envelopes of a channel merge.

Server -> client: an envelope ``{"channel": str, "epoch": str, "seq": int,
"data": {...}}``, plus ``"snapshot": true`` when it holds the channel's whole
state; ``seq`` grows by one per channel within an epoch (numbered in Redis by
the job), so a client can ignore anything not newer than what it has.
Client -> server: optionally ``{"subscribe": ["orders.today", ...]}`` to
choose channels (default: all); each newly subscribed channel's snapshot is
sent first. A reconnecting client passes its position in each channel as the
``since`` query parameter of /ws (`parse_since`); the package docstring has
the whole protocol.

Both directions' incoming JSON (envelopes read from Redis, messages from
browsers) is checked by a pydantic model; whatever breaks the shape raises
`ProtocolError` with one clear sentence per kind of mistake, and the caller
drops the message (Redis) or closes the socket with code 1003 (browser).

Whoever falls behind a channel's stream (a slow client's queue, the push
server's own fan-out when publishes come faster than it delivers) replaces
the envelopes it has not passed on with one: `coalesce`, the newer envelope,
with the minutes of both on a per-minute channel.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from rtdash.channels import ORDERS_PER_MINUTE, ROUTES_PER_MINUTE, TRAFFIC_PER_MINUTE

# Channels whose live envelopes may hold only the minutes that changed ({"date", "minutes": {...}}).
PER_MINUTE_CHANNELS = frozenset({ORDERS_PER_MINUTE, TRAFFIC_PER_MINUTE, ROUTES_PER_MINUTE})

MAX_CLIENT_MESSAGE_BYTES = 4096
MAX_CHANNELS = 64
MAX_CHANNEL_NAME = 128


class ProtocolError(ValueError):
    """A message that breaks the protocol; the text says how."""


MAX_EPOCH = 64

Epoch = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EPOCH)]


@dataclass(frozen=True)
class Envelope:
    channel: str
    seq: int
    text: str  # the exact JSON sent to clients, encoded once for every subscriber
    epoch: str = ""          # "" for an envelope written before channels had epochs
    snapshot: bool = False   # the channel's whole state (from its snapshot key)


@dataclass(frozen=True)
class Position:
    """Where a client is in a channel's stream: the epoch and seq of the last envelope it applied."""

    epoch: str
    seq: int


class EnvelopeMessage(BaseModel):
    """An envelope as the jobs write it: these fields only, types as they are (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel: Annotated[str, StringConstraints(min_length=1)]
    epoch: Epoch = ""
    seq: Annotated[int, Field(ge=0)]
    snapshot: bool = False
    data: dict[str, Any]


class SubscribeMessage(BaseModel):
    """What a browser may send: the channels it wants, at most MAX_CHANNELS names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subscribe: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHANNEL_NAME)]],
                         Field(max_length=MAX_CHANNELS)]


class PositionMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    epoch: Epoch
    seq: Annotated[int, Field(ge=0)]


Channel = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHANNEL_NAME)]
SINCE = TypeAdapter(Annotated[dict[Channel, PositionMessage], Field(max_length=MAX_CHANNELS)])

_ENVELOPE_ERRORS = {
    "": "envelope must have channel, seq and data, and may have epoch and snapshot, nothing else",
    "channel": "channel must be a non-empty string",
    "epoch": f"epoch must be a string of 1 to {MAX_EPOCH} characters",
    "seq": "seq must be a non-negative integer",
    "snapshot": "snapshot must be true or false",
    "data": "data must be an object",
}
_SINCE_ERROR = (f'since must be {{channel: {{"epoch": str, "seq": int >= 0}}}}, at most {MAX_CHANNELS} channels, '
                f"names of 1-{MAX_CHANNEL_NAME} chars, epochs of 1-{MAX_EPOCH}")
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


def encode_envelope(channel: str, seq: int, data: dict, *, epoch: str = "", snapshot: bool = False) -> str:
    """The JSON text of an envelope as the jobs write it to Redis (jobs/lua/envelope.lua), checked like an
    incoming one; without `epoch`, one written before channels had epochs."""
    fields: dict[str, Any] = {"channel": channel}
    if epoch:
        fields["epoch"] = epoch
    fields["seq"] = seq
    if snapshot:
        fields["snapshot"] = True
    fields["data"] = data
    return parse_envelope(json.dumps(fields, separators=(",", ":"), ensure_ascii=False)).text


def parse_envelope(raw: str | bytes) -> Envelope:
    """Check an envelope coming from Redis (snapshot key, pub/sub or history); its text is kept as it came."""
    message = _validated(EnvelopeMessage, raw, _ENVELOPE_ERRORS, "envelope")
    text = raw.decode() if isinstance(raw, bytes) else raw
    return Envelope(message.channel, message.seq, text, message.epoch, message.snapshot)


def parse_since(raw: str | bytes) -> dict[str, Position]:
    """A reconnecting client's position per channel, from the ``since`` query parameter of /ws ("" for none)."""
    if not raw:
        return {}
    try:
        since = SINCE.validate_json(raw)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise ProtocolError("since is not JSON") from None
        raise ProtocolError(_SINCE_ERROR) from None
    return {channel: Position(p.epoch, p.seq) for channel, p in since.items()}


def parse_client_message(raw: str | bytes) -> list[str]:
    """The channels a client asks for with {"subscribe": [...]}."""
    return _validated(SubscribeMessage, raw, _SUBSCRIBE_ERRORS, "message").subscribe


@lru_cache(maxsize=256)
def merged_minutes(older: str, newer: str) -> str:
    """The text of a per-minute envelope equal to applying `older` then `newer` (both JSON texts).

    Same day and epoch: `newer` with the minutes of both (its own value where both have a minute)
    and any top-level field only `older` had (a mark such as "this is a full state" stays true).
    Otherwise `newer` alone, as the page replaces its day. Cached: every slow session of a channel
    merges the same pair.
    """
    old, new = json.loads(older), json.loads(newer)
    old_data, new_data = old.get("data"), new.get("data")
    if (old.get("epoch") != new.get("epoch") or not isinstance(old_data, dict) or not isinstance(new_data, dict)
            or old_data.get("date") != new_data.get("date")
            or not isinstance(old_data.get("minutes"), dict) or not isinstance(new_data.get("minutes"), dict)):
        return newer
    merged = {**old, **new, "data": {**new_data, "minutes": {**old_data["minutes"], **new_data["minutes"]}}}
    return json.dumps(merged, separators=(",", ":"), ensure_ascii=False)


def coalesce(older: Envelope, newer: Envelope) -> Envelope:
    """What a client that missed `older` must get instead of both: `newer`, or both merged on a per-minute channel."""
    if newer.channel not in PER_MINUTE_CHANNELS:
        return newer
    text = merged_minutes(older.text, newer.text)
    return newer if text is newer.text else dataclasses.replace(newer, text=text)
