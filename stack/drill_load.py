"""The fault drill's load: paid notifies re-sent until `success`, and shoppers through the gateway.

`Payer` drives the payment simulator (its order ids, placing, signing, amounts,
duplicates and report) at a steady rate, one phase at a time. Each payment's
order is placed in the order service first; one it cannot place (it is down)
is never paid, as a checkout that failed. A placed order's notify not answered
``success`` is re-sent after pauses (rtdash.retry), as a provider does: a
component may be down, and the payer keeps going. Only orders the order
service answered ``success`` are acknowledged; the drill compares once none is
outstanding. `Shoppers` runs the traffic simulator through the gateway for one
phase and ends its arrivals when asked, letting the sessions under way finish.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine

from producers.provider.simulator import PaymentSimulator
from producers.traffic import TrafficConfig, TrafficReport, TrafficSimulator
from rtdash.retry import async_retrying

# Re-sends of a notify not answered `success`: pauses doubling from the first to the cap, at most
# RESEND_ATTEMPTS posts in all (several minutes at the cap), or until the drill stops.
RESEND_FIRST_S, RESEND_MAX_S = 0.2, 2.0
RESEND_ATTEMPTS = 200
SHOPPER_ACCOUNTS = 200
SESSION_WAIT_S = 60.0   # how long the sessions under way may take to finish once arrivals end


class NotAccepted(Exception):
    """A notify the order service did not answer ``success`` (down, refused, or timed out)."""


class Payer:
    """New paid notifies at a steady rate while a phase lasts; each re-sent until acknowledged."""

    def __init__(self, simulator: PaymentSimulator, stop: asyncio.Event):
        self.simulator = simulator
        self.stop = stop
        self.acknowledged: dict[str, int] = {}   # order id -> cents, answered `success`
        self.given_up: set[str] = set()          # never answered `success` within the bounds
        self.not_placed: set[str] = set()        # the order service could not take the order: never paid
        self.resends = 0
        self._numbered = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def outstanding(self) -> int:
        """Notifies posted or waiting to be re-sent, not yet answered `success` (nor given up)."""
        return len(self._tasks)

    async def pay(self, rate: float, until: asyncio.Event) -> None:
        """Post new notifies (and the simulator's share of duplicates) at `rate`/s until `until` is set."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        start, sent = time.perf_counter(), 0
        while not until.is_set() and not self.stop.is_set():
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            order_id, cents, body, duplicate = self.simulator.next_payment(self._numbered)
            self._numbered += 1
            sent += 1
            self._spawn(self._deliver(order_id, cents, body, duplicate))

    def _spawn(self, delivery: Coroutine) -> None:
        task = asyncio.create_task(delivery)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, order_id: str, cents: int, body: bytes, duplicate: bool) -> None:
        if duplicate:
            # A repeat of a notify already posted: the original is the one re-sent until acknowledged.
            await self.simulator.post(order_id, cents, body, True)
            return
        if not await self.simulator.place(order_id, cents):
            self.not_placed.add(order_id)   # as a checkout that failed: nothing to pay, no notify
            return
        replies: list[bool] = []
        try:
            async for attempt in async_retrying(first_s=RESEND_FIRST_S, max_s=RESEND_MAX_S, jitter=True,
                                                attempts=RESEND_ATTEMPTS, stop=self.stop, on=NotAccepted):
                with attempt:
                    again = attempt.retry_state.attempt_number > 1
                    self.resends += again
                    await self.simulator.post(order_id, cents, body, again,
                                              on_reply=lambda _order, _cents, ok, _at: replies.append(ok))
                    if not replies or not replies[-1]:
                        raise NotAccepted(order_id)
        except NotAccepted:
            self.given_up.add(order_id)
            return
        self.acknowledged[order_id] = cents

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.simulator.close()


class Shoppers:
    """The traffic simulator through the gateway for one phase (Poisson arrivals at `rate` sessions/s)."""

    def __init__(self, gateway_url: str, rate: float, seed: int):
        # Arrivals go on until `end()`: the run's loop reads the config's duration at every arrival.
        self.simulator = TrafficSimulator(gateway_url, TrafficConfig(users=SHOPPER_ACCOUNTS, rate=rate,
                                                                     duration=10.0 ** 9, seed=seed))
        self.task = asyncio.create_task(self.simulator.run())

    @property
    def report(self) -> TrafficReport:
        return self.simulator.report

    @property
    def done(self) -> bool:
        return self.task.done()

    def end(self) -> None:
        """No new sessions from the next arrival on; the sessions under way finish."""
        self.simulator.config.duration = 0.0

    async def close(self) -> None:
        """End arrivals and wait (bounded) for the sessions under way; cancelled if they take too long."""
        self.end()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), SESSION_WAIT_S)
        except asyncio.TimeoutError:
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
