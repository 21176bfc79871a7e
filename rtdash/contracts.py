"""Event contracts: one definition per event type.

Each event type is a frozen dataclass. Producers serialise it with
`to_json`; the Spark jobs parse the same bytes with `spark_schema(cls)`, which
derives a StructType from the dataclass fields. Adding a field here changes
both sides at once, which is the point: there is no second copy of a schema to
drift.

Timestamps travel as ISO-8601 strings in UTC with millisecond precision
(``2026-11-26T17:54:54.123Z``), a format Spark's JSON reader parses into
TimestampType without options. Money travels as integer cents (fen).

Python readers (the notifier, tests) parse an event with `from_json`: pydantic
validates the JSON against the same dataclass, strictly (a wrong type is an
error, never converted).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, TypeAdapter, ValidationError


def _timestamp(value: Any) -> datetime:
    """A timestamp is an ISO-8601 string, parsed as `parse_ts` does (pydantic alone would take epoch seconds)."""
    if isinstance(value, str):
        try:
            return parse_ts(value)
        except ValueError:
            pass
    raise ValueError("not an ISO-8601 timestamp such as 2026-11-26T17:54:54.123Z")


# A datetime on the wire: what `format_ts` writes and Spark's TimestampType reads.
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


@dataclass(frozen=True)
class OrderPaid:
    """An order became paid: published to topic ``orders`` once, key = order id.

    Written by the order service's outbox relay after the payment notify that
    paid the order was verified and stored.
    """

    topic: ClassVar[str] = "orders"

    order_id: str           # the shop's out_trade_no
    trade_no: str           # the payment provider's transaction id
    amount_cents: int       # total_amount in fen
    paid_at: Timestamp      # gmt_payment, as UTC
    trade_status: str       # TRADE_SUCCESS or TRADE_FINISHED
    notify_id: str          # id of the notify that paid it
    recorded_at: Timestamp  # when the order service stored it

    def key(self) -> bytes:
        return self.order_id.encode()


@dataclass(frozen=True)
class GatewayRequest:
    """One request that passed the gateway (or a service using the in-process mixin).

    Published to topic ``gateway`` after the response has gone out, key =
    visitor id (so one visitor's requests stay in order on one partition).
    Privacy: no raw client IP unless RTDASH_GATEWAY_STORE_CLIENT_IP is set;
    ``visitor_id`` is a salted hash of client IP and User-Agent whose salt
    rotates daily; Authorization, Cookie and configured headers are redacted.
    """

    topic: ClassVar[str] = "gateway"

    request_id: str
    started_at: Timestamp
    method: str
    path: str
    route: str                      # route table name, "" when no route matched
    query: dict[str, list[str]]     # query parameters, every value kept
    status: int
    request_bytes: int
    response_bytes: int
    total_ms: float                 # first byte in -> last byte out, as the gateway saw it
    gateway_ms: float               # total minus upstream: the gateway's own cost
    visitor_id: str
    source: str                     # "proxy" or "in_process"
    upstream_ms: float | None = None
    client_ip: str | None = None
    user_id: str | None = None      # set when the request is authenticated
    user_agent: str | None = None
    referrer: str | None = None
    headers: dict[str, str] | None = None   # request headers, redacted
    # Filled by per-route extractors:
    search_term: str | None = None          # q of /search
    result_product_ids: list[str] | None = None  # product ids a search returned
    product_id: str | None = None           # product of a product page
    extras: dict[str, str] | None = None
    # True when the gateway recognised a crawler (rtdash.traffic_rules.is_bot); absent in events of older gateways,
    # so the traffic job applies the same User-Agent rule itself too.
    bot: bool | None = None

    def key(self) -> bytes:
        return self.visitor_id.encode()


@dataclass(frozen=True)
class AlertStateChanged:
    """An alert rule changed state: published to topic ``alerts``, key = rule name.

    Written by the alerts job (jobs/alerts.py) when a rule becomes ``pending``,
    ``firing`` or ``resolved`` (Grafana's alert states); the ``alerts`` dashboard
    channel carries the rules pending or firing now.
    """

    topic: ClassVar[str] = "alerts"

    rule: str               # e.g. "orders_drop", "gateway_5xx_share"
    state: str              # "pending", "firing" or "resolved"
    since: Timestamp        # when the rule entered this state
    value: float            # the rule's value at this evaluation
    # What it was compared with (the earlier hour for orders_drop), if anything; may be missing like every
    # optional field (a keyword-only default, so the wire order of the fields stays as written).
    baseline: float | None = field(default=None, kw_only=True)
    message: str            # one line for people
    evaluated_at: Timestamp

    def key(self) -> bytes:
        return self.rule.encode()


def format_ts(value: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, the wire form of every timestamp."""
    if value.tzinfo is None:
        raise ValueError("event timestamps must be timezone-aware")
    # isoformat of a UTC time ends in "+00:00"; it is several times cheaper than strftime.
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_ts(text: str) -> datetime:
    """The datetime of a wire timestamp; ValueError if `text` is not ISO-8601."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def to_dict(event: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        out[name] = format_ts(value) if isinstance(value, datetime) else value
    return out


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def to_json(event: Any) -> bytes:
    """The bytes a producer writes to Kafka for `event`."""
    return json.dumps(to_dict(event), separators=(",", ":"), ensure_ascii=False).encode()


def from_json(cls: type, payload: bytes | str) -> Any:
    """Parse and check one event of type `cls`; raises ValueError naming each field that is wrong.

    Strict: an integer field refuses "12", 12.5 and true; a string field refuses 12; a
    timestamp is an ISO-8601 string; a number field takes an integer. Fields `cls` does not
    have are ignored (a reader keeps working when a writer adds one); a field with a default
    (every optional one) may be missing.
    """
    try:
        return _validator(cls).validate_json(payload, strict=True)
    except ValidationError as exc:
        raise ValueError(describe(exc, whole=cls.__name__)) from None


@functools.cache
def _validator(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def describe(exc: ValidationError, *, whole: str) -> str:
    """One line naming each problem, e.g. ``to: Field required; text: ...`` (`whole` names the input itself)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in exc.errors())


def required_fields(cls: type) -> list[str]:
    """The fields every event of `cls` carries (those not Optional): what the jobs' dead-letter check tests."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if not _unwrap(hints[f.name])[1]]


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(base type, is Optional) of an annotation such as ``str | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def spark_schema(cls: type):
    """The StructType Spark uses to parse `cls` from JSON (imports pyspark lazily)."""
    from pyspark.sql import types as T

    def spark_type(tp: Any):
        origin = typing.get_origin(tp)
        if origin is list:
            (item,) = typing.get_args(tp)
            return T.ArrayType(spark_type(item))
        if origin is dict:
            key, value = typing.get_args(tp)
            return T.MapType(spark_type(key), spark_type(value))
        simple = {str: T.StringType(), int: T.LongType(), float: T.DoubleType(),
                  bool: T.BooleanType(), datetime: T.TimestampType()}
        if tp not in simple:
            raise TypeError(f"no Spark type for {tp!r}")
        return simple[tp]

    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        base, optional = _unwrap(hints[f.name])
        fields.append(T.StructField(f.name, spark_type(base), nullable=True))
    return T.StructType(fields)
