"""Publishing GatewayRequest events without ever slowing the request path.

`KafkaPublisher.publish` is the only call made on the event loop: a
non-blocking put into a bounded queue (settings.gateway_queue_size). When the
queue is full the event is dropped and counted; nothing waits. One background
thread drains the queue in batches into a kafka-python producer (acks=1, key =
visitor id, value = `rtdash.contracts.to_json(event)`), which batches them by
linger_ms. When Kafka has acknowledged nothing for send_timeout_s (down or
slow), the thread stops taking from the queue (what it holds stays with it or
with the producer, which keeps retrying), so the queue fills and further events
are dropped and counted; creating the producer and sending are retried with
capped exponential backoff, and publishing resumes by itself when Kafka is back.
Events the producer finally gives up on (after 2 minutes) count as `failed`.

`MemoryPublisher` has the same interface and keeps events in a list: the test
double, and a sink for applications that only want the events locally.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from kafka import KafkaProducer

from rtdash.contracts import GatewayRequest, to_json

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
    """Bounded queue + one producer thread; see the module docstring."""

    def __init__(self, *, bootstrap_servers: str, topic: str, queue_size: int, batch_size: int = 500,
                 linger_ms: int = 50, max_inflight: int = 1000, send_timeout_s: float = 5.0, max_backoff_s: float = 5.0,
                 client_id: str = "rtdash-gateway", prepare: Callable[[], object] | None = None):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.max_inflight = max_inflight
        self.send_timeout_s = send_timeout_s
        self.max_backoff_s = max_backoff_s
        self.client_id = client_id
        self.prepare = prepare                       # run once per new producer (e.g. create the topic)
        self._queue: queue.Queue[GatewayRequest] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._dropped = 0
        self._published = 0
        self._failed = 0
        self._connected = False
        self._last_error: str | None = None
        self._dropping = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-publisher", daemon=True)
        self._producer: KafkaProducer | None = None
        self._unsent: deque[GatewayRequest] = deque()   # taken from the queue, not yet given to the producer
        self._inflight = 0                           # handed to the producer, not yet acknowledged
        self._progress_at = 0.0                      # last acknowledgement (or first send after idle)
        self._acked = threading.Condition(self._lock)
        self._prepared = False
        self._warned_down = False

    # --- called from the event loop -----------------------------------------------------

    def publish(self, event: GatewayRequest) -> bool:
        """Queue `event` for Kafka; never blocks. False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._dropped += 1
                first = not self._dropping
                self._dropping = True
            if first:
                log.warning("event queue full (%d): dropping gateway events until Kafka catches up",
                            self.queue_size)
            return False
        if self._dropping:
            self._dropping = False
        return True

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"queue_depth": self._queue.qsize(), "queue_size": self.queue_size,
                    "published": self._published, "dropped": self._dropped, "failed": self._failed,
                    "kafka_connected": self._connected, "last_error": self._last_error}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued if Kafka takes it within `timeout`, then close the producer."""
        self._stopping.set()
        self._thread.join(timeout)

    # --- the producer thread ----------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            if self._stopping.is_set() and not self._unsent and self._queue.empty():
                if self._producer is not None:
                    try:
                        self._producer.flush(timeout=self.send_timeout_s)
                    except Exception as exc:  # noqa: BLE001
                        log.warning("events left unpublished at stop: %s", exc)
                break
            if backoff and self._stopping.wait(backoff):
                break                                 # stopping while Kafka is unavailable: give up
            try:
                self._step()
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - any failure: keep the batch, retry later
                backoff = min(self.max_backoff_s, max(0.1, backoff * 2))
                self._note_failure(exc)
        if self._producer is not None:
            try:
                self._producer.close(timeout=2)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the Kafka producer: %s", exc)

    def _step(self) -> None:
        producer = self._connect()
        self._wait_for_kafka()
        if not self._unsent:
            self._unsent = self._take_batch()
        while self._unsent:
            event = self._unsent[0]
            future = producer.send(self.topic, key=event.key(), value=to_json(event))  # may raise: kept
            with self._lock:
                if self._inflight == 0:
                    self._progress_at = time.monotonic()
                self._inflight += 1
            future.add_callback(self._on_sent)
            future.add_errback(self._on_error)
            self._unsent.popleft()

    def _wait_for_kafka(self) -> None:
        """Hold back (so the queue fills) while Kafka acknowledges nothing or too much is pending.

        The producer batches by linger_ms on its own; this thread only waits when
        events handed to it have gone unacknowledged for send_timeout_s, which is
        how an outage shows, or when max_inflight events are pending.
        """
        def flowing() -> bool:
            return self._inflight == 0 or (self._inflight < self.max_inflight
                                           and time.monotonic() - self._progress_at < self.send_timeout_s)

        with self._acked:
            if not self._acked.wait_for(flowing, self.send_timeout_s):
                raise TimeoutError(f"Kafka acknowledged none of {self._inflight} events "
                                   f"for {self.send_timeout_s:g}s")

    def _take_batch(self) -> deque[GatewayRequest]:
        batch: deque[GatewayRequest] = deque()
        try:
            batch.append(self._queue.get(timeout=0.5))   # wake up now and then to notice a stop
        except queue.Empty:
            return batch
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.send_timeout_s * 1000)
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers.split(","), client_id=self.client_id,
                acks=1, linger_ms=self.linger_ms, max_block_ms=timeout_ms, request_timeout_ms=timeout_ms,
                delivery_timeout_ms=120_000, reconnect_backoff_max_ms=1000, retry_backoff_ms=200)
        if not self._prepared:
            if self.prepare is not None:
                self.prepare()
            self._prepared = True
            self._note_success()
        return self._producer

    def _on_sent(self, _metadata: Any) -> None:
        with self._lock:
            self._published += 1
            self._inflight -= 1
            self._progress_at = time.monotonic()
            was = self._connected
            self._connected = True
            self._last_error = None
            self._acked.notify_all()
        if not was:
            self._warned_down = False
            log.info("kafka reachable, publishing gateway events to %s", self.topic)

    def _on_error(self, exc: Exception) -> None:
        with self._lock:
            self._failed += 1
            self._inflight -= 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._acked.notify_all()

    def _note_success(self) -> None:
        with self._lock:
            was = self._connected
            self._connected = True
            self._last_error = None
        self._warned_down = False
        if not was:
            log.info("kafka reachable, publishing gateway events to %s", self.topic)

    def _note_failure(self, exc: Exception) -> None:
        with self._lock:
            self._connected = False
            self._last_error = f"{type(exc).__name__}: {exc}"
        if not self._warned_down:            # once per outage, not on every retry
            self._warned_down = True
            log.warning("kafka unavailable, gateway events wait in the queue (retrying): %s", exc)
