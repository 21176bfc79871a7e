"""The order store: paid orders and their outbox, in one SQLAlchemy transaction.

Writing the order and its `OrderPaid` event in the same transaction is the
outbox pattern: if the order is stored, its event is stored too, and the relay
(relay.py) publishes it to Kafka whenever Kafka is reachable. A paid order is
therefore never lost while Kafka is down, and the notify handler never waits on
Kafka.

The store is synchronous (any SQLAlchemy URL works: SQLite by default,
PostgreSQL by setting) and is called from an executor, never on the event loop.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import (BigInteger, Column, DateTime, Integer, LargeBinary, MetaData, String, Table,
                        create_engine, delete, event, func, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rtdash.contracts import OrderPaid, to_json
from rtdash.payments import PaymentNotify

log = logging.getLogger("rtdash.order_service.store")

metadata = MetaData()

orders = Table(
    "orders", metadata,
    Column("order_id", String(64), primary_key=True),
    Column("trade_no", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("trade_status", String(32), nullable=False),
    Column("paid_at", DateTime(timezone=True), nullable=False),
    Column("notify_id", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True, index=True),
)


class Outcome(enum.Enum):
    PAID = "paid"              # new paid order stored, event queued in the outbox
    DUPLICATE = "duplicate"    # same order, same amount: already counted
    CONFLICT = "conflict"      # same order id, different amount: refused


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: bytes
    payload: bytes


def make_engine(url: str) -> Engine:
    """An engine tuned for this workload: SQLite in WAL mode, others as given."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
        return engine
    return create_engine(url, pool_pre_ping=True)


class OrderStore:
    """Records paid orders exactly once; hands outbox rows to the relay."""

    def __init__(self, engine: Engine, *, topic: str, on_outbox_write=None):
        self.engine = engine
        self.topic = topic
        # Called after a commit that added outbox rows (wakes the relay).
        self.on_outbox_write = on_outbox_write or (lambda: None)
        metadata.create_all(engine)

    def record_paid(self, notify: PaymentNotify) -> Outcome:
        """Store a paid notify; idempotent by order id, refuses an amount conflict."""
        return self.record_paid_many([notify])[0]

    def record_paid_many(self, notifies: list[PaymentNotify]) -> list[Outcome]:
        """Store several paid notifies in one transaction (group commit); one outcome each.

        Equivalent to calling `record_paid` for each in order: the first
        notify of an order pays it, later ones (in this batch or before) are
        duplicates or conflicts. One transaction for many notifies is what
        lets a single SQLite writer keep up with thousands per second.
        """
        now = datetime.now(timezone.utc)
        try:
            with self.engine.begin() as conn:
                ids = list({n.out_trade_no for n in notifies})
                known = dict(conn.execute(select(orders.c.order_id, orders.c.amount_cents)
                                          .where(orders.c.order_id.in_(ids))).all())
                outcomes, order_rows, outbox_rows = [], [], []
                for notify in notifies:
                    if notify.out_trade_no in known:
                        same = known[notify.out_trade_no] == notify.amount_cents
                        outcomes.append(Outcome.DUPLICATE if same else Outcome.CONFLICT)
                        continue
                    known[notify.out_trade_no] = notify.amount_cents
                    event = OrderPaid(
                        order_id=notify.out_trade_no, trade_no=notify.trade_no, amount_cents=notify.amount_cents,
                        paid_at=notify.paid_at, trade_status=notify.trade_status, notify_id=notify.notify_id,
                        recorded_at=now)
                    order_rows.append(dict(
                        order_id=notify.out_trade_no, trade_no=notify.trade_no, amount_cents=notify.amount_cents,
                        trade_status=notify.trade_status, paid_at=notify.paid_at, notify_id=notify.notify_id,
                        recorded_at=now))
                    outbox_rows.append(dict(topic=self.topic, key=event.key(), payload=to_json(event),
                                            created_at=now))
                    outcomes.append(Outcome.PAID)
                if order_rows:
                    conn.execute(orders.insert(), order_rows)
                    conn.execute(outbox.insert(), outbox_rows)
        except IntegrityError:
            # A concurrent writer (multi-worker databases) paid one of these orders first: redo,
            # now seeing its row.
            return self.record_paid_many(notifies)
        if Outcome.PAID in outcomes:
            self.on_outbox_write()
        return outcomes

    def pending(self, limit: int = 500) -> list[OutboxRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload)
                .where(outbox.c.published_at.is_(None)).order_by(outbox.c.id).limit(limit)).all()
        return [OutboxRow(*r) for r in rows]

    def mark_published(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=datetime.now(timezone.utc)))

    def prune_published(self, keep: timedelta = timedelta(days=1)) -> int:
        """Delete outbox rows published longer ago than `keep` (kept a while for inspection)."""
        with self.engine.begin() as conn:
            return conn.execute(delete(outbox).where(
                outbox.c.published_at < datetime.now(timezone.utc) - keep)).rowcount

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(outbox)
                                .where(outbox.c.published_at.is_(None))).scalar_one()

    def paid_totals(self) -> tuple[int, int]:
        """(count, amount_cents) of every paid order: the ground truth for checks."""
        with self.engine.connect() as conn:
            count, amount = conn.execute(
                select(func.count(), func.coalesce(func.sum(orders.c.amount_cents), 0))).one()
        return int(count), int(amount)
