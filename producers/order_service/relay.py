"""Outbox relay: publishes stored order events to Kafka, in order, at least once.

The relay is woken by the store after each commit; it never runs on the event
loop, so the notify path does not wait on Kafka. The service runs it as a
thread of the order store process (store_process.py), away from the HTTP
process's GIL; the counters /healthz reports are in shared memory, where the
HTTP process reads them. The producer is idempotent (acks=all) and keyed by
order id; if Kafka is down the rows stay in the outbox and the relay retries
with capped exponential backoff until the broker is back.

Woken, the relay first waits `gather_s` (10 ms) for more commits, as a
Kafka producer lingers, so that each read (a query, a flush to the broker)
carries more rows. Kafka reports failed deliveries only
(`delivery.report.only.error`): a batch that flushed with no failure was
acknowledged whole, so no Python callback runs per message. Both together
took the relay thread from 0.17 to 0.05 cores at 1,500 notifies/s, in the
process that also takes the notifies in (BENCHMARKS.md).

Rows Kafka acknowledged are marked published in one write every
`mark_interval_s` (and as soon as the outbox goes quiet), not after every
batch: with SQLite there is one writer at a time, and each mark is a write
the notify path would otherwise queue behind. The relay's own commits also
run SQLite's WAL checkpoints, so the group commits do not. A crash
between "sent" and "marked published" re-sends those rows (at most
`mark_interval_s` of them); the Spark job drops the duplicate order ids.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time

from confluent_kafka import KafkaError, KafkaException, Producer

from .store import OrderStore

log = logging.getLogger("rtdash.order_service.relay")


SPAWN = multiprocessing.get_context("spawn")


class Wakeup:
    """Tells the relay thread there are new rows; `set` never blocks the committing thread.

    A post to a semaphore does not wait for anyone (`multiprocessing.Event.set`,
    used when the relay was a process of its own, waited until the woken process
    had run, on the notify path's commit); `wait` takes every post made since the
    last one, so a burst of commits is one wake-up.
    """

    def __init__(self) -> None:
        self._posts = threading.Semaphore(0)

    def set(self) -> None:
        self._posts.release()

    def wait(self, timeout: float | None = None) -> bool:
        """True if woken (by any number of `set` calls), False after `timeout` seconds without one."""
        woken = self._posts.acquire(timeout=timeout)
        while self._posts.acquire(False):
            pass
        return woken


class RelayStatus:
    """What the relay reports to /healthz, in shared memory (readable from another process)."""

    def __init__(self) -> None:
        self._published = SPAWN.Value("q", 0)
        self._connected = SPAWN.Value("b", 0)
        self._error = SPAWN.Array("c", 300)

    @property
    def published(self) -> int:
        return self._published.value

    def add_published(self, n: int) -> None:
        with self._published.get_lock():
            self._published.value += n

    @property
    def kafka_connected(self) -> bool:
        return bool(self._connected.value)

    @kafka_connected.setter
    def kafka_connected(self, value: bool) -> None:
        self._connected.value = int(value)

    @property
    def last_error(self) -> str | None:
        return self._error.value.decode(errors="replace") or None

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        self._error.value = (value or "").encode()[:299]


class OutboxRelay:
    def __init__(self, store: OrderStore, *, bootstrap_servers: str, batch: int = 500,
                 send_timeout_s: float = 10.0, max_backoff_s: float = 5.0, mark_interval_s: float = 0.5,
                 gather_s: float = 0.01, status: RelayStatus | None = None):
        self.store = store
        self.gather_s = gather_s
        self.bootstrap_servers = bootstrap_servers
        self.batch = batch
        self.send_timeout_s = send_timeout_s
        self.max_backoff_s = max_backoff_s
        self.mark_interval_s = mark_interval_s
        self.status = status or RelayStatus()
        self._wake = Wakeup()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name="outbox-relay", daemon=True)
        self._producer: Producer | None = None
        self._failures: list[KafkaError] = []   # delivery failures of the batch in flight
        # Sent and acknowledged, not yet marked published; `_sent_upto` skips them in the next read.
        self._unmarked: list[int] = []
        self._sent_upto = 0
        self._last_mark = time.monotonic()

    def start(self) -> None:
        """Run the relay in a thread of this process."""
        self._thread.start()

    def wake(self) -> None:
        """Thread-safe: called after a commit that wrote outbox rows."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run(self) -> None:
        """Publish until stopped: at once what is pending, then whenever woken."""
        self._wake.set()  # publish whatever a previous run left in the outbox
        try:
            self._connect_early()
            self._loop()
        finally:
            if self._producer is not None:
                self._producer.flush(5)
                self._producer = None  # its threads end with it, not at interpreter exit

    def _loop(self) -> None:
        backoff = 0.0
        next_prune = time.monotonic() + 600
        while not self._stopping.is_set():
            if backoff:
                self._stopping.wait(backoff)  # Kafka was down: retry after the backoff
                woken = True
            else:  # idle until the store commits new rows; a quiet spell marks what was sent
                woken = self._wake.wait(self.mark_interval_s if self._unmarked else None)
                if woken and self.gather_s:
                    self._stopping.wait(self.gather_s)  # let the next commits join this read
            if self._stopping.is_set():
                break
            try:
                while self._drain_once():
                    pass
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - any failure means: keep rows, retry later
                backoff = min(self.max_backoff_s, max(0.25, backoff * 2))
                self._note_failure(exc, backoff)
            try:
                if self._unmarked and (backoff or not woken
                                       or time.monotonic() - self._last_mark >= self.mark_interval_s):
                    self._mark_published()
                    self._wake.set()  # read the outbox from its start once: rows that committed late
                if time.monotonic() >= next_prune:
                    self.store.prune_published()
                    next_prune = time.monotonic() + 600
            except Exception as exc:  # noqa: BLE001 - the rows stay; marking them is tried again
                log.warning("outbox relay could not update the outbox: %s", exc)
        # Last attempt on shutdown so a clean stop leaves little in the outbox.
        try:
            if self._producer is not None and self.status.kafka_connected:  # down: not worth a timeout
                while self._drain_once():
                    pass
        except Exception as exc:  # noqa: BLE001
            log.warning("outbox relay stopped with rows pending: %s", exc)
        try:
            self._mark_published()
        except Exception as exc:  # noqa: BLE001
            log.warning("outbox relay could not mark %d sent orders; they will be sent again: %s",
                        len(self._unmarked), exc)

    def _mark_published(self) -> None:
        """Record what Kafka acknowledged, in one write.

        Afterwards the next read starts from the beginning of the outbox again:
        with several writers (PostgreSQL) a row can commit after rows with
        higher ids were read, and this is where it is picked up.
        """
        if self._unmarked:
            self.store.mark_published(self._unmarked)
            self._unmarked = []
        self._sent_upto = 0
        self._last_mark = time.monotonic()

    def _note_failure(self, exc: Exception, backoff: float) -> None:
        was_connected = self.status.kafka_connected
        self.status.kafka_connected = False
        self.status.last_error = f"{type(exc).__name__}: {exc}"
        if was_connected or backoff <= 0.25:
            log.warning("kafka unavailable, orders stay in the outbox (retrying): %s", exc)

    def _connect(self) -> Producer:
        if self._producer is None:
            self._producer = Producer({
                "bootstrap.servers": self.bootstrap_servers, "client.id": "rtdash-order-service",
                "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                "message.timeout.ms": int(self.send_timeout_s * 1000),
                "reconnect.backoff.max.ms": 1000,
                "delivery.report.only.error": True, "on_delivery": self._on_delivery_error,
                "log_level": 3,  # errors only: while Kafka is down the relay's own line says so
            })
        return self._producer

    def _connect_early(self, timeout_s: float = 3.0) -> None:
        """Connect to Kafka before the first order is waiting for it.

        A producer's first send waits for its connection, metadata and
        producer id: about a second on a fresh broker, which the first orders
        after a start would otherwise wait. Kafka being down here is not an
        error; the loop's backoff deals with it as it comes.
        """
        try:
            self._connect().list_topics(timeout=timeout_s)
        except KafkaException:
            return
        self.status.kafka_connected = True
        log.info("outbox relay connected to Kafka at %s", self.bootstrap_servers)

    def _on_delivery_error(self, err: KafkaError | None, _msg) -> None:
        """Called (from `flush`, on this thread) for each message Kafka did not take."""
        if err is not None:
            self._failures.append(err)

    def _drain_once(self) -> bool:
        """Publish one batch of pending rows; True if there may be more."""
        rows = self.store.pending(self.batch, after_id=self._sent_upto)
        if not rows:
            return False
        producer = self._connect()
        failures = self._failures = []
        for row in rows:
            producer.produce(row.topic, key=row.key, value=row.payload)
        # In slices, so that a stop does not wait out the whole timeout while Kafka is down.
        deadline = time.monotonic() + self.send_timeout_s
        left = producer.flush(0.5)
        while left and time.monotonic() < deadline and not self._stopping.is_set():
            left = producer.flush(0.5)
        if left or failures:
            # Nothing of this batch counts as published; drop what is still queued so the retry
            # does not pile copies up in the producer (a copy that did get through is a duplicate
            # order id, which the job drops).
            producer.purge()
            producer.flush(0)
            reason = failures[0].str() if failures else f"{left} messages not acknowledged in time"
            raise KafkaException(f"publishing {len(rows)} orders failed: {reason}")
        self._unmarked += [row.id for row in rows]
        self._sent_upto = rows[-1].id
        if not self.status.kafka_connected:
            log.info("kafka reachable, outbox relay publishing")
        self.status.kafka_connected = True
        self.status.add_published(len(rows))
        self.status.last_error = None
        return len(rows) == self.batch
