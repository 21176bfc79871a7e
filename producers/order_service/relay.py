"""Outbox relay: publishes stored order events to Kafka, in order, at least once.

A single background thread (kafka-python's producer is synchronous) woken by
the store after each commit; it never runs on the event loop, so the notify
path does not wait on Kafka. The producer is idempotent (acks=all) and keyed by
order id; if Kafka is down the rows stay in the outbox and the relay retries
with capped exponential backoff until the broker is back. A crash between
"sent" and "marked published" re-sends those rows; the Spark job drops the
duplicate order ids.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from .store import OrderStore

log = logging.getLogger("rtdash.order_service.relay")


@dataclass
class RelayStatus:
    published: int = 0
    last_error: str | None = None
    kafka_connected: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class OutboxRelay:
    def __init__(self, store: OrderStore, *, bootstrap_servers: str, batch: int = 500,
                 send_timeout_s: float = 10.0, max_backoff_s: float = 5.0):
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.batch = batch
        self.send_timeout_s = send_timeout_s
        self.max_backoff_s = max_backoff_s
        self.status = RelayStatus()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._producer: KafkaProducer | None = None

    def start(self) -> None:
        self._wake.set()  # publish whatever a previous run left in the outbox
        self._thread.start()

    def wake(self) -> None:
        """Thread-safe: called after a commit that wrote outbox rows."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._producer is not None:
            self._producer.close(timeout=5)

    def _run(self) -> None:
        backoff = 0.0
        next_prune = time.monotonic() + 600
        while not self._stopping.is_set():
            if backoff:
                self._stopping.wait(backoff)  # Kafka was down: retry after the backoff
            else:
                self._wake.wait()             # idle until the store commits new rows
            if self._stopping.is_set():
                break
            self._wake.clear()
            try:
                while self._drain_once():
                    pass
                backoff = 0.0
                if time.monotonic() >= next_prune:
                    self.store.prune_published()
                    next_prune = time.monotonic() + 600
            except Exception as exc:  # noqa: BLE001 - any failure means: keep rows, retry later
                backoff = min(self.max_backoff_s, max(0.25, backoff * 2))
                self._note_failure(exc, backoff)
        # Last attempt on shutdown so a clean stop leaves little in the outbox.
        try:
            if self._producer is not None:
                while self._drain_once():
                    pass
        except Exception as exc:  # noqa: BLE001
            log.warning("outbox relay stopped with rows pending: %s", exc)

    def _note_failure(self, exc: Exception, backoff: float) -> None:
        with self.status.lock:
            was_connected = self.status.kafka_connected
            self.status.kafka_connected = False
            self.status.last_error = f"{type(exc).__name__}: {exc}"
        if was_connected or backoff <= 0.25:
            log.warning("kafka unavailable, orders stay in the outbox (retrying): %s", exc)

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                enable_idempotence=True, acks="all", linger_ms=5,
                max_block_ms=int(self.send_timeout_s * 1000),
                request_timeout_ms=int(self.send_timeout_s * 1000) // 2,
                delivery_timeout_ms=int(self.send_timeout_s * 1000) + 1000,
                reconnect_backoff_max_ms=1000, client_id="rtdash-order-service")
        return self._producer

    def _drain_once(self) -> bool:
        """Publish one batch of pending rows; True if there may be more."""
        rows = self.store.pending(self.batch)
        if not rows:
            return False
        producer = self._connect()
        futures = [(row.id, producer.send(row.topic, key=row.key, value=row.payload)) for row in rows]
        producer.flush(timeout=self.send_timeout_s)
        done = []
        for row_id, fut in futures:
            fut.get(timeout=self.send_timeout_s)  # raises on failure: the batch is retried
            done.append(row_id)
        self.store.mark_published(done)
        with self.status.lock:
            if not self.status.kafka_connected:
                log.info("kafka reachable, outbox relay publishing")
            self.status.kafka_connected = True
            self.status.published += len(done)
            self.status.last_error = None
        return len(rows) == self.batch
