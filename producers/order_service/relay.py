"""Outbox relay: publishes stored order events to Kafka, in order, at least once.

The relay is woken by the store after each commit; it never runs on the event
loop, so the notify path does not wait on Kafka. The service runs it as a
thread of the order store process (store_process.py), away from the HTTP
process's GIL; the counters /healthz reports are in shared memory, where the
HTTP process reads them. The producer is idempotent (acks=all) and keyed by
order id; if Kafka is down the rows stay in the outbox and the relay tries
again (rtdash.retry: pauses doubling up to `max_backoff_s`) until the broker
is back or the relay is stopped.

Woken, the relay first waits `gather_s` for more commits, as a Kafka
producer lingers, so that each read (a query, a flush to the broker)
carries more rows. Kafka reports failed deliveries only
(`delivery.report.only.error`): a batch that flushed with no failure was
acknowledged whole, so no Python callback runs per message. Both keep the
relay's share of the store process small (BENCHMARKS.md).

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
import threading
import time

from confluent_kafka import KafkaError, KafkaException, Producer

from rtdash.kafka_producer import make_producer
from rtdash.retry import retrying

from .handoff import RelayStatus
from .store import OrderStore

log = logging.getLogger("rtdash.order_service.relay")


class Wakeup:
    """Tells the relay thread there are new rows; `set` never blocks the committing thread.

    A post to a semaphore waits for nobody, so the notify path's commit does
    not wait for the relay to run; `wait` takes every post made since the
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


class RelayStopped(RuntimeError):
    """The relay was stopped while Kafka was unavailable; what was pending stays in the outbox."""


class OutboxRelay:
    """Publishes the outbox to Kafka from a thread of its own; `wake` after each commit that adds rows."""

    batch = 500                  # rows per read of the outbox
    send_timeout_s = 10.0        # a batch Kafka has not acknowledged by then is sent again
    first_pause_s = 0.25         # while Kafka is down: the first pause before trying again...
    max_backoff_s = 5.0          # ...doubling up to this
    gather_s = 0.01              # woken, wait this long for more commits before reading
    prune_every_s = 600.0        # how often published rows past their keeping time are deleted
    stop_timeout_s = 15.0        # how long `stop` waits for the last publishing

    def __init__(self, store: OrderStore, *, bootstrap_servers: str, status: RelayStatus | None = None,
                 mark_interval_s: float = 0.5):
        """`status` is shared with the HTTP process (the service passes the store process's);
        `mark_interval_s` is how often acknowledged rows are marked published (tests set it
        to see rows sent but not yet marked)."""
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.mark_interval_s = mark_interval_s
        self.status = status or RelayStatus()
        self._wake = Wakeup()
        self._stopping = threading.Event()
        self._publish_retries = retrying(first_s=self.first_pause_s, max_s=self.max_backoff_s, stop=self._stopping)
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

    def stop(self) -> None:
        """Stop publishing: what Kafka takes within `stop_timeout_s` is published and marked, the rest stays."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.stop_timeout_s)

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
        next_prune = time.monotonic() + self.prune_every_s
        while not self._stopping.is_set():
            # Idle until the store commits new rows; a quiet spell marks what was sent.
            woken = self._wake.wait(self.mark_interval_s if self._unmarked else None)
            if woken and self.gather_s:
                self._stopping.wait(self.gather_s)  # let the next commits join this read
            if self._stopping.is_set():
                break
            try:
                self._publish_pending()
            except Exception as exc:  # noqa: BLE001 - stopped while Kafka was down: the rows wait for the next start
                log.warning("outbox relay stopping with Kafka unavailable; orders stay in the outbox (%s)", exc)
                break
            if self._unmarked and (not woken or time.monotonic() - self._last_mark >= self.mark_interval_s):
                self._mark_quietly()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.prune_every_s
                try:
                    self.store.prune_published()
                except Exception as exc:  # noqa: BLE001 - pruning is tried again later
                    log.warning("outbox relay could not prune the outbox: %s", exc)
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

    def _publish_pending(self) -> None:
        """Publish every pending row; while that fails (Kafka down), try again until it works or the relay stops.

        Raises only once stopped: the last failure, or `RelayStopped`.
        """
        for attempt in self._publish_retries:
            with attempt:
                if self._stopping.is_set():
                    raise RelayStopped(f"stopped while Kafka was unavailable: {self.status.last_error}")
                try:
                    while self._drain_once():
                        pass
                except Exception as exc:  # noqa: BLE001 - any failure means: keep the rows, try again
                    self._note_failure(exc, first=attempt.retry_state.attempt_number == 1)
                    self._mark_quietly()  # what Kafka acknowledged before the failure
                    raise

    def _mark_quietly(self) -> None:
        """`_mark_published`, then read the outbox from its start once; a failure leaves the rows for next time."""
        try:
            self._mark_published()
        except Exception as exc:  # noqa: BLE001 - the rows stay; marking them is tried again
            log.warning("outbox relay could not update the outbox: %s", exc)
            return
        self._wake.set()  # read the outbox from its start once: rows that committed late

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

    def _note_failure(self, exc: Exception, *, first: bool) -> None:
        """Report the failure in /healthz; log it when Kafka was reachable or the failures just began."""
        was_connected = self.status.kafka_connected
        self.status.kafka_connected = False
        self.status.last_error = f"{type(exc).__name__}: {exc}"
        if was_connected or first:
            log.warning("kafka unavailable, orders stay in the outbox (retrying): %s", exc)

    def _connect(self) -> Producer:
        if self._producer is None:
            self._producer = make_producer(
                self.bootstrap_servers, client_id="rtdash-order-service", acks="all", linger_ms=5,
                delivery_timeout_s=self.send_timeout_s, log_level=2,  # the outage is logged here, once
                extra={"enable.idempotence": True, "delivery.report.only.error": True,
                       "on_delivery": self._on_delivery_error})
        return self._producer

    def _connect_early(self, timeout_s: float = 3.0) -> None:
        """Connect to Kafka before the first order is waiting for it.

        A producer's first send waits for its connection, metadata and
        producer id: about a second on a fresh broker, which the first orders
        after a start would otherwise wait. Kafka being down here is not an
        error; `_publish_pending` tries again as long as it is.
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
