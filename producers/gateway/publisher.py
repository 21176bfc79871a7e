"""Publishing GatewayRequest events without ever slowing the request path.

`KafkaPublisher.publish` is the only call made on the event loop: it hands the
event (key = visitor id, value = `rtdash.contracts.to_json(event)`) to a
librdkafka producer (`rtdash.kafka_producer`, acks=1, linger 50 ms), which
queues it and returns at once. The producer batches, sends, reconnects and
retries by itself. When its queue holds settings.gateway_queue_size events, or
an event would take it beyond settings.gateway_queue_bytes bytes (Kafka down or
slow: large events fill the bytes first), it refuses more: the event is dropped
and counted, and the request goes on; nothing on the request path waits for
Kafka, and an outage takes no more memory than the bound. A poll
thread serves the delivery reports (published / failed counts, "kafka back")
and the client's errors ("kafka unavailable", once per outage); events Kafka
has not taken within the delivery timeout count as failed. `stop` publishes
what is queued if Kafka takes it within its timeout.

`MemoryPublisher` has the same interface and keeps events in a list: the test
double, and a sink for applications that only want the events locally.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from rtdash.contracts import GatewayRequest, to_json
from rtdash.kafka_producer import make_producer
from rtdash.retry import retrying

log = logging.getLogger("rtdash.gateway.publisher")


class Publisher(Protocol):
    def publish(self, event: GatewayRequest) -> bool: ...

    def health(self) -> dict[str, Any]: ...


class MemoryPublisher:
    """Keeps published events in `events` (bounded like the real one: beyond `queue_size` they are dropped)."""

    def __init__(self, queue_size: int = 100_000):
        self.queue_size = queue_size
        self.events: list[GatewayRequest] = []
        self.dropped = 0

    def publish(self, event: GatewayRequest) -> bool:
        if len(self.events) >= self.queue_size:
            self.dropped += 1
            return False
        self.events.append(event)
        return True

    def health(self) -> dict[str, Any]:
        return {"queue_depth": len(self.events), "queue_size": self.queue_size, "published": len(self.events),
                "dropped": self.dropped, "failed": 0, "kafka_connected": False, "last_error": None}

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0) -> None:
        pass


class KafkaPublisher:
    """A librdkafka producer and the thread that serves its reports; see the module docstring."""

    def __init__(self, *, bootstrap_servers: str, topic: str, queue_size: int, queue_bytes: int = 64 << 20,
                 linger_ms: int = 50, delivery_timeout_s: float = 120.0, client_id: str = "rtdash-gateway",
                 prepare: Callable[[], object] | None = None, producer_options: Mapping[str, Any] | None = None):
        """`producer_options` adds librdkafka properties (e.g. a ``stats_cb``) to the producer's own."""
        self.topic = topic
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.prepare = prepare                       # run once before serving (e.g. create the topic)
        # log_level 2: librdkafka keeps its per-reconnect errors to itself; the outage is logged here once.
        self._producer = make_producer(bootstrap_servers, client_id=client_id, acks=1, linger_ms=linger_ms,
                                       queue_messages=queue_size, queue_bytes=queue_bytes,
                                       delivery_timeout_s=delivery_timeout_s, log_level=2,
                                       extra={**(producer_options or {}), "on_delivery": self._delivered,
                                              "error_cb": self._client_error})
        # Each counter has one writer: `produced` and `dropped` the event loop, the others the poll thread.
        self._produced = 0
        self._produced_bytes = 0
        self._dropped = 0
        self._published = 0
        self._failed = 0
        self._settled_bytes = 0                      # bytes published or failed
        self._connected = False
        self._warned_down = False
        self._last_error: str | None = None
        self._dropping = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gateway-publisher", daemon=True)

    # --- called from the event loop -----------------------------------------------------

    def publish(self, event: GatewayRequest) -> bool:
        """Queue `event` for Kafka; never blocks. False (and counted) when the producer's queue is full."""
        value = to_json(event)
        try:
            self._producer.produce(self.topic, value, event.key())
        except BufferError:
            self._dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("event queue full (%d events or %d bytes): dropping gateway events until Kafka "
                            "catches up", self.queue_size, self.queue_bytes)
            return False
        except KafkaException as exc:                # refused outright (e.g. larger than the broker takes)
            self._dropped += 1
            self._last_error = str(exc)
            log.warning("gateway event %s not publishable: %s", event.request_id, exc)
            return False
        self._produced += 1
        self._produced_bytes += len(value)
        self._dropping = False
        return True

    def health(self) -> dict[str, Any]:
        """Events (and bytes of their values) waiting in the queue, its bounds, the counts and Kafka's state."""
        return {"queue_depth": self._produced - self._published - self._failed, "queue_size": self.queue_size,
                "queue_bytes": self._produced_bytes - self._settled_bytes, "queue_size_bytes": self.queue_bytes,
                "published": self._published, "dropped": self._dropped, "failed": self._failed,
                "kafka_connected": self._connected, "last_error": self._last_error}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued if Kafka takes it within `timeout` (not waited for while Kafka is down)."""
        self._stopping.set()
        self._thread.join(timeout)
        left = self._producer.flush(timeout if self._connected else 0)
        if left:
            log.warning("%d gateway events left unpublished at stop", left)

    # --- the poll thread ----------------------------------------------------------------

    def _serve(self) -> None:
        if self.prepare is not None:
            try:
                for attempt in retrying(first_s=0.1, max_s=5.0, stop=self._stopping):
                    with attempt:
                        try:
                            self.prepare()
                        except Exception as exc:
                            self._down(f"{type(exc).__name__}: {exc}")
                            raise
            except Exception:  # noqa: BLE001 - stopped before Kafka was reachable
                return
            self._up()
        while not self._stopping.is_set():
            self._producer.poll(0.2)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        self._settled_bytes += len(msg)
        if err is not None:
            self._failed += 1
            self._down(err.str())
            return
        self._published += 1
        if not self._connected:
            self._up()

    def _client_error(self, err: KafkaError) -> None:
        # The client's own errors; the broker being unreachable is the one that matters here.
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            self._down(err.str())

    def _up(self) -> None:
        self._connected = True
        self._last_error = None
        log.info("kafka %s: publishing gateway events to %s", "back" if self._warned_down else "reachable",
                 self.topic)
        self._warned_down = False

    def _down(self, reason: str) -> None:
        self._connected = False
        self._last_error = reason
        if not self._warned_down:                   # once per outage, not on every retry
            self._warned_down = True
            log.warning("kafka unavailable, gateway events wait in the producer's queue of %d events "
                        "and %d bytes (dropped when it is full): %s", self.queue_size, self.queue_bytes, reason)
