"""Paying orders from a test: the payment simulator, run to completion on a loop of its own."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from producers.payment_provider import PaymentSimulator, SimulationReport
from rtdash.payments import load_private_key
from rtdash.settings import Settings


def pay(settings: Settings, count: int, *, rate: float = 20, seed: int = 0,
        duplicate_share: float = 0.0) -> SimulationReport:
    """Post `count` signed notifies at `rate`/s to the order service and report what it accepted.

    Runs in a thread of its own, so callers that have an event loop running
    (Playwright's sync API, for one) can use it too.
    """
    async def run() -> SimulationReport:
        simulator = PaymentSimulator(settings, load_private_key(settings.keys_dir),
                                     duplicate_share=duplicate_share, seed=seed)
        try:
            return await simulator.run(rate=rate, count=count)
        finally:
            simulator.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
