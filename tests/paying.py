"""Paying orders from a test: the payment simulator, run to completion on a loop of its own; and the
orders of one day in the order store, the ground truth of that day's dashboard."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, tzinfo

from sqlalchemy import func, select

from producers.order_service.store import OrderStore, epoch_ms, orders
from producers.provider.simulator import PaymentSimulator, SimulationReport
from rtdash.keys import load_private_key
from rtdash.settings import Settings


def pay(settings: Settings, count: int, *, rate: float = 20, seed: int = 0,
        duplicate_share: float = 0.0) -> SimulationReport:
    """Place `count` orders and post their signed notifies at `rate`/s to the order service; report what it
    accepted (a notify pays only an order placed first, as the shop's checkout does).

    Runs in a thread of its own, so callers that have an event loop running
    (Playwright's sync API, for one) can use it too.
    """
    async def run() -> SimulationReport:
        simulator = PaymentSimulator(settings, load_private_key(settings.provider_private_key_path),
                                     duplicate_share=duplicate_share, seed=seed)
        try:
            return await simulator.run(rate=rate, count=count)
        finally:
            simulator.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def paid_on(store: OrderStore, day: date | str, tz: tzinfo) -> tuple[int, int]:
    """(count, amount_cents) of the orders paid on `day` in `tz`: what "today" shows on that day.

    A test compares the dashboard with the day the dashboard says it shows, so a
    run across midnight compares like with like.
    """
    day = date.fromisoformat(day) if isinstance(day, str) else day
    start = datetime.combine(day, time.min, tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tz)
    with store.engine.connect() as conn:
        count, amount = conn.execute(
            select(func.count(), func.coalesce(func.sum(orders.c.amount_cents), 0))
            .where(orders.c.paid_at_ms >= epoch_ms(start), orders.c.paid_at_ms < epoch_ms(end))).one()
    return int(count), int(amount)
