"""The one way rtdash produces to Kafka: a librdkafka producer (confluent_kafka) with shared settings.

Every service that writes to Kafka (the order service's outbox relay, the
gateway, the alerts query) builds its producer here, naming only what differs
for it. librdkafka queues what `produce()` is given and returns at once (it
raises BufferError when `queue_messages` are waiting, or when the message would
take the values waiting beyond `queue_bytes`), batches by `linger_ms`,
retries and reconnects by itself (pauses up to `reconnect_backoff_max_ms`) and
reports each message once delivered or after `delivery_timeout_s`, through the
`on_delivery` callback served by `poll()`/`flush()`.

Keys go to partitions by murmur2, as kafka-python and the Java client place
them, so a key keeps its partition whichever client wrote it.

    producer = make_producer(settings.kafka_servers, client_id="rtdash-gateway", acks=1, linger_ms=50,
                             extra={"on_delivery": delivered})
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer

__all__ = ["producer_config", "make_producer"]

ACKS = (0, 1, -1, "all")
MAX_QUEUE_KBYTES = 2**31 - 1
# librdkafka names of the arguments below: set them through the arguments, not through `extra`.
BASE_KEYS = ("bootstrap.servers", "client.id", "acks", "linger.ms", "queue.buffering.max.messages",
             "queue.buffering.max.kbytes", "message.timeout.ms", "reconnect.backoff.max.ms", "partitioner",
             "log_level")


def producer_config(bootstrap_servers: str, *, client_id: str, acks: int | str = "all", linger_ms: float = 5,
                    queue_messages: int = 100_000, queue_bytes: int = 1 << 30,
                    delivery_timeout_s: float = 120.0, reconnect_backoff_max_ms: int = 1000, log_level: int = 3,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The librdkafka configuration of an rtdash producer; `extra` adds other librdkafka properties.

    `queue_bytes` bounds the bytes waiting (librdkafka counts message values; it holds at
    most 2^31 - 1 KiB), rounded up to whole KiB; the default is librdkafka's own, 1 GiB.
    `log_level` is syslog's: 3 lets librdkafka print its errors (each failed connection
    included), 2 leaves outages to the caller's own log lines.
    """
    if not bootstrap_servers.strip():
        raise ValueError("bootstrap_servers must name at least one broker (host:port)")
    if not client_id.strip():
        raise ValueError("client_id must not be empty: brokers and logs tell producers apart by it")
    if acks not in ACKS:
        raise ValueError(f"acks must be one of {ACKS}, not {acks!r}")
    if linger_ms < 0:
        raise ValueError(f"linger_ms must be 0 or more, not {linger_ms}")
    if queue_messages < 1:
        raise ValueError(f"queue_messages must be at least 1, not {queue_messages}")
    if not 1024 <= queue_bytes <= MAX_QUEUE_KBYTES * 1024:
        raise ValueError(f"queue_bytes must be between 1024 and {MAX_QUEUE_KBYTES * 1024}, not {queue_bytes}")
    if delivery_timeout_s <= 0:
        raise ValueError(f"delivery_timeout_s must be positive, not {delivery_timeout_s}")
    if reconnect_backoff_max_ms < 1:
        raise ValueError(f"reconnect_backoff_max_ms must be at least 1, not {reconnect_backoff_max_ms}")
    repeated = sorted(set(extra or {}) & set(BASE_KEYS))
    if repeated:
        raise ValueError(f"set {', '.join(repeated)} through the arguments of producer_config, not extra")
    return {"bootstrap.servers": bootstrap_servers, "client.id": client_id, "acks": acks,
            "linger.ms": linger_ms, "queue.buffering.max.messages": queue_messages,
            "queue.buffering.max.kbytes": -(-queue_bytes // 1024),
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "reconnect.backoff.max.ms": reconnect_backoff_max_ms, "partitioner": "murmur2_random",
            "log_level": log_level, **(extra or {})}


def make_producer(bootstrap_servers: str, *, client_id: str, **options: Any) -> Producer:
    """A confluent_kafka.Producer on `producer_config(bootstrap_servers, client_id=..., **options)`.

    It connects in the background: building one with Kafka down succeeds, and
    what is produced waits in its queue until Kafka is back or the delivery timeout.
    """
    return Producer(producer_config(bootstrap_servers, client_id=client_id, **options))
