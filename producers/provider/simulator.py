"""The payment load generator: the provider's notifies, straight to the order service, at a steady rate.

Acts as the shop and the provider it is registered with, without ``/pay``:
for each simulated payment it places the order, with its amount, in the order
service's internal API (as the shop's checkout does: a notify pays only an
order placed there), then builds the notify of DESIGN.md, signs it with the
demo provider's private key and posts it to the order service.
Arrivals are open-loop at a fixed rate, so a slow order service shows up as
latency, not as a lower offered rate. A share of notifies is re-sent
(providers retry until they read ``success``), and the report says exactly
what the order service accepted, so a dashboard can be checked against it.
An order that could not be placed counts as an error and its notify is not
sent; a re-sent notify waits until its order's placing is answered.
Used by ``rtdash simulate payments``, ``rtdash demo --payments``, the benches and
the end-to-end tests.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pycurl
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.curl_httpclient import CurlAsyncHTTPClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from producers.order_service.internal import PLACE_ORDER_PATH
from rtdash.payments import FORM_HEADERS, NOTIFY_PATH, format_amount, notify_body, notify_params
from rtdash.settings import Settings

MIN_CENTS, MAX_CENTS = 100, 50_000     # the range of simulated amounts
MAX_CLIENTS = 64                        # requests in flight at once at most
REQUEST_TIMEOUT_S = 30.0
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class SimulationReport:
    """What was sent and what the order service accepted."""

    sent: int = 0
    duplicates_sent: int = 0
    placed: int = 0                   # orders placed in the order service
    accepted_orders: int = 0          # distinct orders answered `success`
    accepted_amount_cents: int = 0
    refused: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    accepted_ids: set[str] = field(default_factory=set, repr=False)

    def summary(self) -> str:
        return (f"placed {self.placed} orders; sent {self.sent} notifies ({self.duplicates_sent} duplicates); "
                f"accepted {self.accepted_orders} orders, {format_amount(self.accepted_amount_cents)} yuan; "
                f"refused {self.refused}, errors {self.errors}")


class PaymentSimulator:
    """Places orders and posts their signed notifies at a steady rate to one order service.

    `url` is where notifies go (default: the order service's notify path),
    `orders_url` the base of its internal API (default: the setting).
    """

    def __init__(self, settings: Settings, private_key: rsa.RSAPrivateKey, *, url: str | None = None,
                 orders_url: str | None = None, duplicate_share: float = 0.05, seed: int | None = None):
        if not 0 <= duplicate_share < 1:
            raise ValueError("duplicate share must be in [0, 1)")
        self.settings = settings
        self.private_key = private_key
        self.url = url or f"http://{settings.bind_host}:{settings.order_service_port}{NOTIFY_PATH}"
        self.place_url = (orders_url or settings.order_service_internal).rstrip("/") + PLACE_ORDER_PATH
        self.duplicate_share = duplicate_share
        self.rng = random.Random(seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.client: AsyncHTTPClient | None = None  # made on the running loop, by the first request
        self.report = SimulationReport()
        self._sent_bodies: list[tuple[str, int, bytes]] = []
        self._placing: dict[str, asyncio.Future[bool]] = {}   # order id -> placed?

    def next_payment(self, n: int) -> tuple[str, int, bytes, bool]:
        """(order id, amount, body, is_duplicate) of the n-th notify."""
        if self._sent_bodies and self.rng.random() < self.duplicate_share:
            order_id, cents, body = self.rng.choice(self._sent_bodies)
            return order_id, cents, body, True
        order_id = f"SIM{self.run_id}{n:08d}"
        cents = self.rng.randint(MIN_CENTS, MAX_CENTS)
        params = notify_params(order_id, cents, settings=self.settings, paid_at=datetime.now(self.settings.tz))
        body = notify_body(params, self.private_key)
        self._sent_bodies.append((order_id, cents, body))
        return order_id, cents, body, False

    async def place(self, order_id: str, cents: int) -> bool:
        """Place the order in the order service (once per order id); whether it was placed."""
        placing = self._placing.get(order_id)
        if placing is not None:       # a re-sent notify: its order is being placed, or was
            return await asyncio.shield(placing)
        placing = self._placing[order_id] = asyncio.get_running_loop().create_future()
        try:
            await self._client().fetch(HTTPRequest(
                self.place_url, method="POST", headers=JSON_HEADERS, request_timeout=REQUEST_TIMEOUT_S,
                body=json.dumps({"order_id": order_id, "amount_cents": cents})))
            self.report.placed += 1
            placing.set_result(True)
        except (HTTPClientError, OSError):
            self.report.errors += 1
            placing.set_result(False)
        return placing.result()

    def _client(self) -> AsyncHTTPClient:
        """libcurl's client, which keeps connections alive: Tornado's own opens one per request, and at
        hundreds of notifies a second that costs the simulator and the order service CPU the stack needs
        (BENCHMARKS.md, traffic_freshness). No proxy from the environment: the order service is a peer."""
        if self.client is None:
            self.client = CurlAsyncHTTPClient(
                force_instance=True, max_clients=MAX_CLIENTS,
                defaults={"prepare_curl_callback": lambda curl: curl.setopt(pycurl.NOPROXY, "*")})
        return self.client

    async def post(self, order_id: str, cents: int, body: bytes, duplicate: bool,
                   on_reply: Callable[[str, int, bool, float], None] | None = None) -> None:
        """Place the order (unless placed before), post one notify and count its reply.

        `on_reply(order_id, cents, ok, replied_at)` sees each; an order that
        could not be placed is reported not ok, without a notify.
        """
        if not await self.place(order_id, cents):
            if on_reply is not None:
                on_reply(order_id, cents, False, time.perf_counter())
            return
        started = time.perf_counter()
        self.report.sent += 1
        self.report.duplicates_sent += duplicate
        try:
            resp = await self._client().fetch(HTTPRequest(self.url, method="POST", headers=FORM_HEADERS,
                                                          body=body, request_timeout=REQUEST_TIMEOUT_S))
            ok = resp.body == b"success"
        except HTTPClientError as exc:
            ok = False
            self.report.refused += exc.code < 500
            self.report.errors += exc.code >= 500
        except OSError:
            ok = False
            self.report.errors += 1
        replied = time.perf_counter()
        self.report.latencies_ms.append((replied - started) * 1000)
        if ok and order_id not in self.report.accepted_ids:
            self.report.accepted_ids.add(order_id)
            self.report.accepted_orders += 1
            self.report.accepted_amount_cents += cents
        if on_reply is not None:
            on_reply(order_id, cents, ok, replied)

    async def run(self, *, rate: float, count: int | None = None, duration: float | None = None,
                  on_tick: Callable[[int, int], None] | None = None,
                  on_reply: Callable[[str, int, bool, float], None] | None = None) -> SimulationReport:
        """Send `count` notifies, or for `duration` seconds, at `rate` per second.

        `on_tick(sent, total)` is called after each send (a progress bar), `on_reply` after each reply.
        """
        if rate <= 0:
            raise ValueError("rate must be positive")
        if count is None and duration is None:
            raise ValueError("give a count or a duration")
        total = count if count is not None else int(rate * duration)
        start = time.perf_counter()
        tasks: set[asyncio.Task] = set()
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.post(*self.next_payment(n), on_reply=on_reply))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if on_tick is not None:
                on_tick(n + 1, total)
        if tasks:
            await asyncio.gather(*tasks)
        return self.report

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
