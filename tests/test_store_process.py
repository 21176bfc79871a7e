"""The order store process: group commits across the pipe, and what the HTTP side sees when it dies.

Kafka is not needed here: the relay points at a closed port, so what is
stored stays in the outbox, which is what these tests look at.
"""
from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timezone

import pytest

from producers.order_service.store import OrderStore, Outcome, make_engine
from producers.order_service.store_process import StoreProcess, StoreUnavailable
from rtdash.payments import PaymentNotify
from rtdash.stack import free_port

PAID_AT = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def notify(order_id: str, cents: int) -> PaymentNotify:
    return PaymentNotify(out_trade_no=order_id, trade_no="T" + order_id, amount_cents=cents,
                         trade_status="TRADE_SUCCESS", paid_at=PAID_AT, notify_id="N" + order_id)


@pytest.fixture()
def database(tmp_path):
    url = f"sqlite:///{tmp_path}/orders.db"
    store = OrderStore(make_engine(url), topic="orders")   # creates the tables, as the service does first
    yield url, store
    store.engine.dispose()


def test_groups_commit_in_the_store_process_with_one_outcome_each(database):
    url, store = database

    async def scenario():
        process = StoreProcess(url, topic="orders", bootstrap_servers=f"127.0.0.1:{free_port()}")
        process.start()
        try:
            first = await process.record_paid_many([notify("A", 100), notify("B", 200), notify("A", 100)])
            second, third = await asyncio.gather(
                process.record_paid_many([notify("B", 999), notify("C", 300)]),
                process.record_paid_many([notify("C", 300)]))
            return first, second, third, process
        finally:
            await process.stop()

    first, second, third, process = asyncio.run(scenario())
    assert first == [Outcome.PAID, Outcome.PAID, Outcome.DUPLICATE]
    assert second == [Outcome.CONFLICT, Outcome.PAID]
    assert third == [Outcome.DUPLICATE]
    assert store.paid_totals() == (3, 600)
    assert store.pending_count() == 3          # Kafka unreachable: the events wait in the outbox
    assert not process.alive


def test_a_dead_store_process_fails_the_waiting_group_and_is_reported(database):
    url, store = database
    exits: list[int | None] = []

    async def scenario():
        process = StoreProcess(url, topic="orders", bootstrap_servers=f"127.0.0.1:{free_port()}",
                               on_exit=exits.append)
        process.start()
        assert await process.record_paid_many([notify("A", 100)]) == [Outcome.PAID]
        os.kill(process._process.pid, signal.SIGKILL)
        for _ in range(100):
            if exits:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable, match="not running"):
            await process.record_paid_many([notify("B", 200)])
        await process.stop()

    asyncio.run(scenario())
    assert exits == [-signal.SIGKILL]
    assert store.paid_totals() == (1, 100)
