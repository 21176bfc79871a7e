"""The notifier's consumer thread: read `orders`, send one confirmation per order, commit what the gateway answered.

kafka-python's consumer blocks, so it runs on a thread of its own; the event
loop only serves /healthz, which reads `NotifierStatus`.

The records of each batch `poll` returns are handled one by one, in partition
order. A record that is not an OrderPaid is logged and skipped. Otherwise its
confirmation goes to the SMS gateway with the order id as idempotency key and
is retried (`rtdash.retry`, pauses doubling from 0.2 s to 10 s) for as long as
the gateway is unavailable and the notifier runs: never dropped, never a busy
loop; Kafka is waited for at start the same way, and so is a broker that goes
away while the notifier reads (a retriable Kafka error from `poll`, such as a
refused connection). Only once the gateway has
answered does the record count as acknowledged. Acknowledged offsets are
committed after each batch, when an outage begins, and at stop. A message the
gateway refuses (4xx) would be refused again: it is logged as rejected and
skipped.

A rebalance (another notifier joining the group, or an outage longer than the
consumer's max.poll.interval.ms) can make a commit fail: the records since the
last commit are read again, and the gateway recognises their keys.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import CommitFailedError, KafkaError, RetriableError
from kafka.structs import OffsetAndMetadata, TopicPartition

from rtdash.contracts import OrderPaid, from_json
from rtdash.retry import retrying

from .sms import Delivery, GatewayUnavailable, MessageRejected, confirmation

log = logging.getLogger("rtdash.notifier")


@dataclass
class NotifierStatus:
    """What /healthz shows; written by the consumer thread only."""

    state: str = "starting"     # starting, consuming, waiting for kafka, waiting for the sms gateway, stopped, failed
    partitions: list[str] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)   # "topic:partition" -> next offset to read
    sent: int = 0               # messages the gateway recorded
    duplicates: int = 0         # messages the gateway had already (an event read twice)
    rejected: int = 0           # messages the gateway refused
    bad_records: int = 0        # records that are not an OrderPaid
    last_error: str | None = None


class ConfirmationSender:
    """Sends one SMS per paid order from `topic`, committing offsets only after the gateway answered."""

    def __init__(self, connect: Callable[[], Any], send: Callable[[str, str, str], Delivery], *, topic: str,
                 to: str, max_records: int = 100, pauses_s: tuple[float, float] = (0.2, 10.0),
                 commit_timeout_ms: int = 10_000, on_exit: Callable[[], None] = lambda: None):
        self.connect = connect        # returns a KafkaConsumer in the notifier's group, not yet subscribed
        self.send = send              # (to, text, idempotency key) -> Delivery
        self.topic = topic
        self.to = to
        self.max_records = max_records
        self.pauses_s = pauses_s      # (first, longest) pause while Kafka or the gateway is unavailable
        self.commit_timeout_ms = commit_timeout_ms
        self.on_exit = on_exit
        self.status = NotifierStatus()
        self._acked: dict[TopicPartition, int] = {}   # next offset per partition, acknowledged, not committed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="notifier-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the message in flight; commits what the gateway acknowledged."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("consumer thread still busy after %.0fs", timeout)

    @property
    def running(self) -> bool:
        return self.status.state not in ("stopped", "failed")

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - reported in /healthz and ends the service
            self.status.state = "failed"
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("notifier consumer failed")
        finally:
            self.on_exit()

    def run(self) -> None:
        """The consumer loop on the calling thread, until `stop`."""
        consumer = self._connect()
        if consumer is None:
            self.status.state = "stopped"
            return
        try:
            consumer.subscribe([self.topic])
            self.status.state = "consuming"
            while not self._stopping.is_set():
                batch = self._poll(consumer)
                if batch is None:
                    return
                self.status.partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in consumer.assignment())
                for partition, records in batch.items():
                    for record in records:
                        if not self._deliver(consumer, record):
                            return
                        self._acked[partition] = record.offset + 1
                self._commit(consumer)
        finally:
            self._commit(consumer)
            consumer.close(autocommit=False)
            self.status.state = "stopped"

    def _while_unavailable(self, call: Callable[[], Any], *, on: type[Exception], what: str, state: str,
                           on_outage: Callable[[], None] = lambda: None) -> Any:
        """`call()`'s result, asked again while it raises `on` (the status says `state` meanwhile, pauses
        growing from the first to the longest of `pauses_s`); None if the notifier stopped first.

        `on_outage` runs once, at the first failure.
        """
        first_s, max_s = self.pauses_s
        outage = False
        try:
            for attempt in retrying(first_s=first_s, max_s=max_s, stop=self._stopping, on=on, log=log, what=what):
                with attempt:
                    if self._stopping.is_set():
                        return None
                    try:
                        return call()
                    except on as exc:
                        if not outage:
                            outage = True
                            on_outage()
                        self._note_unavailable(state, exc)
                        raise
        except on:   # the notifier stopped during the outage
            pass
        return None

    def _connect(self) -> Any:
        """The consumer, once Kafka answers; None if the notifier stopped first."""
        return self._while_unavailable(self.connect, on=KafkaError, what="connecting to kafka",
                                       state="waiting for kafka")

    def _poll(self, consumer: Any) -> dict | None:
        """The next records; while the broker is unavailable, paused and asked again; None if stopped first."""
        batch = self._while_unavailable(lambda: consumer.poll(timeout_ms=500, max_records=self.max_records),
                                        on=RetriableError, what="reading orders", state="waiting for kafka")
        if batch is not None and self.status.state == "waiting for kafka":
            self.status.state = "consuming"
        return batch

    def _deliver(self, consumer: Any, record: Any) -> bool:
        """Send the confirmation of one record; False if stopped before the gateway took it."""
        try:
            event = from_json(OrderPaid, record.value)
        except ValueError as exc:
            self.status.bad_records += 1
            log.warning("record %s:%d:%d is not an OrderPaid, skipped: %s", record.topic, record.partition,
                        record.offset, exc)
            return True
        try:
            delivery = self._send(consumer, event)
        except MessageRejected as exc:
            self.status.rejected += 1
            self.status.last_error = f"order {event.order_id}: {exc}"
            log.error("the sms gateway refused the confirmation of order %s, skipped: %s", event.order_id, exc)
            return True
        if delivery is None:
            return False
        self.status.state = "consuming"
        if delivery is Delivery.SENT:
            self.status.sent += 1
            log.info("confirmation of order %s sent to %s", event.order_id, self.to)
        else:
            self.status.duplicates += 1
            log.info("confirmation of order %s was sent before; the gateway kept one", event.order_id)
        return True

    def _send(self, consumer: Any, event: OrderPaid) -> Delivery | None:
        """The gateway's answer for `event`, retried while it is unavailable; None if the notifier stopped first.

        When an outage begins, the offsets acknowledged before it are committed: a
        notifier killed during a long outage reads again from the waiting record on.
        """
        text = confirmation(event)
        return self._while_unavailable(lambda: self.send(self.to, text, event.order_id), on=GatewayUnavailable,
                                       what=f"sending the confirmation of order {event.order_id}",
                                       state="waiting for the sms gateway", on_outage=lambda: self._commit(consumer))

    def _note_unavailable(self, state: str, exc: Exception) -> None:
        self.status.state = state
        self.status.last_error = f"{type(exc).__name__}: {exc}"

    def _commit(self, consumer: Any) -> None:
        """Commit the acknowledged offsets; on failure the records come again (the gateway keeps one each)."""
        pending = dict(self._acked)
        if not pending:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in pending.items()},
                            timeout_ms=self.commit_timeout_ms)
        except CommitFailedError as exc:
            self._acked.clear()
            log.warning("offsets not committed, the group rebalanced (%s): records since the last commit "
                        "will be read again", exc)
            return
        except KafkaError as exc:
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("offsets not committed yet (%s); trying again with the next commit", exc)
            return
        self._acked.clear()
        self.status.committed = {**self.status.committed,
                                 **{f"{tp.topic}:{tp.partition}": offset for tp, offset in pending.items()}}
