"""The order store: the orders the shop placed, the paid ones and their outbox, in SQLAlchemy transactions.

An order is placed first (`placed_orders`: its id and amount, from the shop,
through the internal API); a notify pays it only if it names a placed order
and says the same amount, as the payment provider's integration rules ask.
Checking the amount against the order, not only the signature, is what stops
a signed notify whose free text was re-split into another ``total_amount``
(the signed text is ``k=v&...`` without escaping). A paid order is a row in
`orders`, written once, when its first paid notify comes; a pending order has
none.

About 300 lines, as one module on purpose: the three tables, their schema
check and every transaction on them belong together, so the store's
guarantees can be read in one place.

Writing the paid order and its `OrderPaid` event in the same transaction is
the outbox pattern: if the order is stored, its event is stored too, and the
relay (relay.py) publishes it to Kafka whenever Kafka is reachable. A paid
order is therefore never lost while Kafka is down, and the notify handler
never waits on Kafka.

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

from .handoff import PlaceOrder

log = logging.getLogger("rtdash.order_service.store")

metadata = MetaData()

placed_orders = Table(
    "placed_orders", metadata,
    Column("order_id", String(64), primary_key=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("placed_at_ms", BigInteger, nullable=False),     # when the shop placed it
)

# The paid orders (a row once the order is paid; the ground truth of the dashboard's figures).
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

PLACED_COLUMNS = ("order_id", "amount_cents", "placed_at_ms")
ORDER_COLUMNS = ("order_id", "trade_no", "amount_cents", "trade_status", "paid_at_ms", "notify_id", "recorded_at_ms")
OUTBOX_COLUMNS = ("topic", "key", "payload", "created_at_ms")


# The statements of the hot paths (each group commit, each relay round), built once: building
# a statement and its cache key costs more than SQLite running it.
# One query per group: each placed order among the group's ids, its amount and whether it is paid.
KNOWN_ORDERS = (select(placed_orders.c.order_id, placed_orders.c.amount_cents, orders.c.order_id.is_not(None))
                .select_from(placed_orders.outerjoin(orders, orders.c.order_id == placed_orders.c.order_id))
                .where(placed_orders.c.order_id.in_(bindparam("ids", expanding=True))))
ONE_ORDER = (select(placed_orders.c.amount_cents, orders.c.trade_no, orders.c.paid_at_ms)
             .select_from(placed_orders.outerjoin(orders, orders.c.order_id == placed_orders.c.order_id))
             .where(placed_orders.c.order_id == bindparam("order_id")))
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
    """What became of one item of a group (a placed order or a verified notify)."""

    PLACED = "placed"                   # a new pending order
    PLACED_BEFORE = "placed before"     # the same order with the same amount again: nothing new
    PAID = "paid"                       # a pending order paid: its row and its event stored
    DUPLICATE = "duplicate"             # a paid notify for an order paid before: already counted
    NOT_PAID = "not paid"               # a notify of a status that pays nothing (WAIT_BUYER_PAY, TRADE_CLOSED)
    UNKNOWN_ORDER = "unknown order"     # a notify for an order never placed: refused
    AMOUNT_DIFFERS = "amount differs"   # another amount than the order's: refused


@dataclass(frozen=True)
class OrderState:
    """An order as the internal API shows it: pending until paid."""

    order_id: str
    amount_cents: int
    status: str                   # "pending" or "paid"
    trade_no: str | None          # the provider's, once paid
    paid_at_ms: int | None        # gmt_payment, once paid


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
    """Records placed orders, and each one's payment exactly once; hands outbox rows to the relay."""

    def __init__(self, engine: Engine, *, topic: str, on_outbox_write: Callable[[], None] | None = None):
        self.engine = engine
        self.topic = topic
        # Called after a commit that added outbox rows (wakes the relay).
        self.on_outbox_write = on_outbox_write or (lambda: None)
        metadata.create_all(engine)
        self._check_schema()
        self._insert_placed = BulkInsert(engine, placed_orders, PLACED_COLUMNS)
        self._insert_orders = BulkInsert(engine, orders, ORDER_COLUMNS)
        self._insert_outbox = BulkInsert(engine, outbox, OUTBOX_COLUMNS)
        self._sqlite = engine.dialect.name == "sqlite"
        # Built once: a group commit is the hot path, and a policy costs more to build than to run.
        self._store_again = retrying(first_s=0.01, max_s=0.1, attempts=STORE_ATTEMPTS, on=IntegrityError,
                                     log=log, what="storing a group of orders")

    def _check_schema(self) -> None:
        """Refuse, with a clear reason, a database whose tables this version cannot write."""
        found = inspect(self.engine)
        for table in (placed_orders, orders, outbox):
            have = {c["name"] for c in found.get_columns(table.name)}
            want = {c.name for c in table.columns}
            if have != want:
                raise SchemaMismatch(
                    f"table {table.name!r} in {self.engine.url.render_as_string(hide_password=True)} has columns "
                    f"{sorted(have)}, this order service writes {sorted(want)}: the database was made by another "
                    "version of rtdash. Move it away (paid orders are also in the Kafka topic) or migrate it.")

    def take_in(self, items: list[PlaceOrder | PaymentNotify]) -> list[Outcome]:
        """Store a group of placed orders and verified notifies in one transaction; one outcome each, in order.

        Items count in order, as one-by-one commits would: an order placed
        earlier in the group can be paid later in it. A notify must name a
        placed order and say its amount; the first paid one pays it, later
        ones are duplicates. A group holds one SELECT of its orders and one
        INSERT per table: one transaction for many items is what lets a
        single SQLite writer keep up with thousands of notifies per second. A
        concurrent writer (several service workers on PostgreSQL) can store
        one of these rows first: the group is then stored again, now seeing
        it, up to `STORE_ATTEMPTS` times in all before `ConcurrentWrites`.
        """
        try:
            for attempt in self._store_again:
                with attempt:
                    outcomes = self._store_group(items)
        except IntegrityError as exc:
            raise ConcurrentWrites(
                f"a group of {len(items)} not stored: each of {STORE_ATTEMPTS} attempts met rows another "
                f"writer was storing at the same time ({type(exc).__name__})") from exc
        if Outcome.PAID in outcomes:
            self.on_outbox_write()
        return outcomes

    def _store_group(self, items: list[PlaceOrder | PaymentNotify]) -> list[Outcome]:
        now = datetime.now(timezone.utc)
        now_ms = epoch_ms(now)
        with self.engine.begin() as conn:
            if self._sqlite:
                # Take the write lock before reading: a read transaction that later writes fails
                # at once if another connection (the relay marking rows) committed in between.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            ids = list({item.order_id if isinstance(item, PlaceOrder) else item.out_trade_no for item in items})
            # order id -> (amount_cents, paid)
            known = {order_id: (amount, bool(paid))
                     for order_id, amount, paid in conn.execute(KNOWN_ORDERS, {"ids": ids})}
            outcomes, placed_rows, order_rows, outbox_rows = [], [], [], []
            for item in items:
                if isinstance(item, PlaceOrder):
                    order = known.get(item.order_id)
                    if order is None:
                        known[item.order_id] = (item.amount_cents, False)
                        placed_rows.append((item.order_id, item.amount_cents, now_ms))
                        outcomes.append(Outcome.PLACED)
                    else:
                        outcomes.append(Outcome.PLACED_BEFORE if order[0] == item.amount_cents
                                        else Outcome.AMOUNT_DIFFERS)
                    continue
                order = known.get(item.out_trade_no)
                if order is None:
                    outcomes.append(Outcome.UNKNOWN_ORDER)
                elif order[0] != item.amount_cents:
                    outcomes.append(Outcome.AMOUNT_DIFFERS)
                elif not item.is_paid:
                    outcomes.append(Outcome.NOT_PAID)
                elif order[1]:
                    outcomes.append(Outcome.DUPLICATE)
                else:
                    known[item.out_trade_no] = (item.amount_cents, True)
                    event = OrderPaid(
                        order_id=item.out_trade_no, trade_no=item.trade_no, amount_cents=item.amount_cents,
                        paid_at=item.paid_at, trade_status=item.trade_status, notify_id=item.notify_id,
                        recorded_at=now)
                    order_rows.append((item.out_trade_no, item.trade_no, item.amount_cents,
                                       item.trade_status, epoch_ms(item.paid_at), item.notify_id, now_ms))
                    outbox_rows.append((self.topic, event.key(), to_json(event), now_ms))
                    outcomes.append(Outcome.PAID)
            self._insert_placed.run(conn, placed_rows)
            self._insert_orders.run(conn, order_rows)
            self._insert_outbox.run(conn, outbox_rows)
        return outcomes

    def order(self, order_id: str) -> OrderState | None:
        """The placed order `order_id`, pending or paid; None if it was never placed."""
        with self.engine.connect() as conn:
            row = conn.execute(ONE_ORDER, {"order_id": order_id}).first()
        if row is None:
            return None
        amount, trade_no, paid_at_ms = row
        return OrderState(order_id, amount, "pending" if paid_at_ms is None else "paid", trade_no, paid_at_ms)

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
