"""The order store process: groups of notifies and placed orders across the pipe, and what the HTTP side
sees when it dies.

Kafka is not needed here: the relay points at a closed port, so what is
stored stays in the outbox, which is what these tests look at.
"""
from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest

from producers.order_service.handoff import PlaceOrder, Received, Reply
from producers.order_service.intake import AMOUNT_DIFFERS, PLACED, PLACED_BEFORE, SUCCESS, UNKNOWN_ORDER
from producers.order_service.store import OrderStore
from producers.order_service.store_process import StoreProcess, StoreUnavailable
from rtdash.database import make_engine
from rtdash.keys import demo_keys, load_private_key
from rtdash.payments import notify_params, signed
from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually_async

PAID_AT = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


@pytest.fixture()
def database(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, kafka_port=free_port())
    demo_keys(settings)
    store = OrderStore(make_engine(settings.database), topic="orders")  # makes the tables, as the service does
    key = load_private_key(settings.provider_private_key_path)

    def notify(order_id: str, cents: int, *, tampered: dict[str, str] | None = None, remote_ip: str = "127.0.0.1",
               **extra) -> Received:
        params = signed(dict(notify_params(order_id, cents, settings=settings, paid_at=PAID_AT), **extra), key)
        return Received(urlencode(dict(params, **(tampered or {}))).encode(), remote_ip)

    yield settings, store, notify
    store.engine.dispose()


def test_groups_are_taken_in_by_the_store_process_with_one_reply_each(database):
    settings, store, notify = database
    forged = notify("F", 100, tampered={"total_amount": "0.01"}, remote_ip="10.0.0.9")
    not_a_form = Received(b"\xff\xfe", "10.0.0.9")

    async def scenario():
        process = StoreProcess(settings)
        process.start()
        try:
            placed = await process.accept([PlaceOrder(o, c) for o, c in (("A", 100), ("B", 200), ("C", 300))])
            first = await process.accept([notify("A", 100), notify("B", 200), notify("A", 100), forged, not_a_form,
                                          notify("X", 100)])
            second, third = await asyncio.gather(
                process.accept([notify("B", 999), notify("C", 300), PlaceOrder("D", 50), PlaceOrder("D", 50),
                                notify("D", 50, trade_status="WAIT_BUYER_PAY")]),
                process.accept([notify("C", 300)]))
            return placed, first, second, third, process
        finally:
            await process.stop()

    placed, first, second, third, process = asyncio.run(scenario())
    assert placed == [PLACED] * 3
    assert first == [SUCCESS, SUCCESS, SUCCESS, Reply(400, "fail: bad signature"),
                     Reply(400, "fail: body is not a valid form"), UNKNOWN_ORDER]
    assert second == [AMOUNT_DIFFERS, SUCCESS, PLACED, PLACED_BEFORE, SUCCESS]
    assert third == [SUCCESS]
    assert store.paid_totals() == (3, 600)
    assert store.pending_count() == 3          # Kafka unreachable: the events wait in the outbox
    assert not process.alive


def test_a_dead_store_process_fails_the_waiting_group_and_is_reported(database):
    settings, store, notify = database
    exits: list[int | None] = []

    async def scenario():
        process = StoreProcess(settings, on_exit=exits.append)
        process.start()
        assert await process.accept([PlaceOrder("A", 100), notify("A", 100)]) == [PLACED, SUCCESS]
        os.kill(process._process.pid, signal.SIGKILL)
        await eventually_async(lambda: exits, timeout=10, what="the store process's exit reported")
        assert not process.alive
        with pytest.raises(StoreUnavailable, match="not running"):
            await process.accept([notify("B", 200)])
        await process.stop()

    asyncio.run(scenario())
    assert exits == [-signal.SIGKILL]
    assert store.paid_totals() == (1, 100)
