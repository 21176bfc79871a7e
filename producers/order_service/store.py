"""The order store: paid orders and their outbox, in one SQLAlchemy transaction.

Writing the order and its `OrderPaid` event in the same transaction is the
outbox pattern: if the order is stored, its event is stored too, and the relay
(relay.py) publishes it to Kafka whenever Kafka is reachable. A paid order is
therefore never lost while Kafka is down, and the notify handler never waits on
Kafka.

The store is synchronous (any SQLAlchemy URL works: SQLite by default,
PostgreSQL by setting) and is called from the order store process or an
executor, never on the event loop.

Times are stored as integer Unix epoch milliseconds (UTC), and the two
INSERTs of a group commit run as plain driver `executemany` calls, compiled
once per engine: SQLAlchemy's per-row parameter processing (datetime to text
for SQLite above all) costs more CPU than SQLite's own work (BENCHMARKS.md).
"""
from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import (BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, bindparam, delete,
                        func, inspect, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rtdash.contracts import OrderPaid, to_json
from rtdash.payments import PaymentNotify
from rtdash.retry import retrying

log = logging.getLogger("rtdash.order_service.store")

metadata = MetaData()

orders = Table(
    "orders", metadata,
    Column("order_id", String(64), primary_key=True),
    Column("trade_no", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("trade_status", String(32), nullable=False),
    Column("paid_at_ms", BigInteger, nullable=False),       # gmt_payment, epoch milliseconds
    Column("notify_id", String(64), nullable=False),
    Column("recorded_at_ms", BigInteger, nullable=False),   # when this service stored it
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("published_at_ms", BigInteger, nullable=True, index=True),   # NULL until Kafka acknowledged it
)

ORDER_COLUMNS = ("order_id", "trade_no", "amount_cents", "trade_status", "paid_at_ms", "notify_id", "recorded_at_ms")
OUTBOX_COLUMNS = ("topic", "key", "payload", "created_at_ms")


# The statements of the hot paths (each group commit, each relay round), built once: building
# a statement and its cache key costs more than SQLite running it.
KNOWN_ORDERS = (select(orders.c.order_id, orders.c.amount_cents)
                .where(orders.c.order_id.in_(bindparam("ids", expanding=True))))
PENDING_OUTBOX = (select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload)
                  .where(outbox.c.published_at_ms.is_(None), outbox.c.id > bindparam("after_id"))
                  .order_by(outbox.c.id).limit(bindparam("limit")))
MARK_PUBLISHED = (update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
                  .values(published_at_ms=bindparam("now_ms")))


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A group that meets a concurrent writer's row (several writers, PostgreSQL) is stored again, at most this often.
STORE_ATTEMPTS = 3
# Ids per UPDATE when marking rows published: databases cap the number of bound parameters.
MARK_CHUNK = 500
# Published outbox rows are kept this long for inspection, then pruned.
KEEP_PUBLISHED = timedelta(days=1)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime, in integer arithmetic (no float rounding)."""
    return (value - EPOCH) // timedelta(milliseconds=1)


class SchemaMismatch(RuntimeError):
    """The database holds tables of another layout (an older rtdash made them)."""


class ConcurrentWrites(RuntimeError):
    """Every attempt to store a group met rows another writer had just stored; the group is not stored."""


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


class BulkInsert:
    """A table's INSERT compiled once for the engine's driver, run as one `executemany`.

    Rows are tuples in `columns` order, of values the driver takes as they are
    (str, int, bytes): no per-row work is left between them and the driver.
    """

    def __init__(self, engine: Engine, table: Table, columns: tuple[str, ...]):
        compiled = table.insert().compile(dialect=engine.dialect, column_keys=list(columns))
        self.sql = str(compiled)
        self.columns = columns
        self.positional = bool(engine.dialect.positional)
        if self.positional and tuple(compiled.positiontup or ()) != columns:
            raise AssertionError(f"{table.name}: compiled parameter order {compiled.positiontup} != {columns}")

    def run(self, conn, rows: list[tuple]) -> None:
        if rows:
            conn.exec_driver_sql(self.sql, rows if self.positional else [dict(zip(self.columns, r)) for r in rows])


class OrderStore:
    """Records paid orders exactly once; hands outbox rows to the relay."""

    def __init__(self, engine: Engine, *, topic: str, on_outbox_write: Callable[[], None] | None = None):
        self.engine = engine
        self.topic = topic
        # Called after a commit that added outbox rows (wakes the relay).
        self.on_outbox_write = on_outbox_write or (lambda: None)
        metadata.create_all(engine)
        self._check_schema()
        self._insert_orders = BulkInsert(engine, orders, ORDER_COLUMNS)
        self._insert_outbox = BulkInsert(engine, outbox, OUTBOX_COLUMNS)
        self._sqlite = engine.dialect.name == "sqlite"
        # Built once: a group commit is the hot path, and a policy costs more to build than to run.
        self._store_again = retrying(first_s=0.01, max_s=0.1, attempts=STORE_ATTEMPTS, on=IntegrityError,
                                     log=log, what="storing a group of paid orders")

    def _check_schema(self) -> None:
        """Refuse, with a clear reason, a database whose tables this version cannot write."""
        found = inspect(self.engine)
        for table in (orders, outbox):
            have = {c["name"] for c in found.get_columns(table.name)}
            want = {c.name for c in table.columns}
            if have != want:
                raise SchemaMismatch(
                    f"table {table.name!r} in {self.engine.url.render_as_string(hide_password=True)} has columns "
                    f"{sorted(have)}, this order service writes {sorted(want)}: the database was made by another "
                    "version of rtdash. Move it away (paid orders are also in the Kafka topic) or migrate it.")

    def record_paid_many(self, notifies: list[PaymentNotify]) -> list[Outcome]:
        """Store paid notifies in one transaction (group commit); one outcome each, in order.

        The first notify of an order pays it; later ones (in this group or
        before) are duplicates, or conflicts when the amount differs. One
        transaction for many notifies is what lets a single SQLite writer keep
        up with thousands per second. A concurrent writer (several service
        workers on PostgreSQL) can store one of these orders first: the group
        is then stored again, now seeing its row, up to `STORE_ATTEMPTS` times
        in all before `ConcurrentWrites` is raised.
        """
        try:
            for attempt in self._store_again:
                with attempt:
                    outcomes = self._store_group(notifies)
        except IntegrityError as exc:
            raise ConcurrentWrites(
                f"{len(notifies)} paid orders not stored: each of {STORE_ATTEMPTS} attempts met rows another "
                f"writer was storing at the same time ({type(exc).__name__})") from exc
        if Outcome.PAID in outcomes:
            self.on_outbox_write()
        return outcomes

    def _store_group(self, notifies: list[PaymentNotify]) -> list[Outcome]:
        now = datetime.now(timezone.utc)
        now_ms = epoch_ms(now)
        with self.engine.begin() as conn:
            if self._sqlite:
                # Take the write lock before reading: a read transaction that later writes fails
                # at once if another connection (the relay marking rows) committed in between.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            ids = list({n.out_trade_no for n in notifies})
            known = dict(conn.execute(KNOWN_ORDERS, {"ids": ids}).all())
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
                order_rows.append((notify.out_trade_no, notify.trade_no, notify.amount_cents,
                                   notify.trade_status, epoch_ms(notify.paid_at), notify.notify_id, now_ms))
                outbox_rows.append((self.topic, event.key(), to_json(event), now_ms))
                outcomes.append(Outcome.PAID)
            self._insert_orders.run(conn, order_rows)
            self._insert_outbox.run(conn, outbox_rows)
        return outcomes

    def pending(self, limit: int = 500, *, after_id: int = 0) -> list[OutboxRow]:
        """Unpublished outbox rows in id order, from `after_id` on (the relay skips rows it sent)."""
        with self.engine.connect() as conn:
            rows = conn.execute(PENDING_OUTBOX, {"after_id": after_id, "limit": limit}).all()
        return [OutboxRow(*r) for r in rows]

    def mark_published(self, ids: list[int]) -> None:
        """Mark rows published, in one transaction (ids in chunks of `MARK_CHUNK`)."""
        if not ids:
            return
        now_ms = epoch_ms(datetime.now(timezone.utc))
        with self.engine.begin() as conn:
            for start in range(0, len(ids), MARK_CHUNK):
                conn.execute(MARK_PUBLISHED, {"ids": ids[start:start + MARK_CHUNK], "now_ms": now_ms})

    def prune_published(self) -> int:
        """Delete outbox rows published longer ago than `KEEP_PUBLISHED` (kept a while for inspection)."""
        with self.engine.begin() as conn:
            return conn.execute(delete(outbox).where(
                outbox.c.published_at_ms < epoch_ms(datetime.now(timezone.utc) - KEEP_PUBLISHED))).rowcount

    def pending_count(self) -> int:
        """Outbox rows not yet published (what /healthz reports)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(outbox)
                                .where(outbox.c.published_at_ms.is_(None))).scalar_one()

    def paid_totals(self) -> tuple[int, int]:
        """(count, amount_cents) of every paid order: the ground truth the tests and benches check against."""
        with self.engine.connect() as conn:
            count, amount = conn.execute(
                select(func.count(), func.coalesce(func.sum(orders.c.amount_cents), 0))).one()
        return int(count), int(amount)
