"""Payment provider simulator: signs and posts async payment notifies.

Acts as the provider the shop is registered with (Alipay async-notify style):
for each simulated payment it builds the notify of DESIGN.md, signs it with the
demo provider's private key (<home>/keys/payment_provider_private.pem) and
posts it to the order service. Arrivals are open-loop at a fixed rate, so a
slow order service shows up as latency, not as a lower offered rate. A share of
notifies is re-sent (providers retry until they read ``success``), and the
report says exactly what the order service accepted, so a dashboard can be
checked against it.
"""
from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from rtdash.payments import GMT_FORMAT, format_amount, signed
from rtdash.settings import Settings

NOTIFY_PATH = "/order_center/order/alipay/callback"
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def notify_params(order_id: str, amount_cents: int, *, settings: Settings, paid_at: datetime,
                  status: str = "TRADE_SUCCESS") -> dict[str, str]:
    """The unsigned parameters of one notify (yuan as a decimal string)."""
    return {
        "out_trade_no": order_id,
        "trade_no": "2026" + uuid.uuid4().hex[:24],
        "total_amount": format_amount(amount_cents),
        "trade_status": status,
        "gmt_payment": paid_at.astimezone(settings.tz).strftime(GMT_FORMAT),
        "notify_id": uuid.uuid4().hex,
        "app_id": settings.payment_app_id,
        "seller_id": settings.payment_seller_id,
    }


def notify_body(params: dict[str, str], private_key: rsa.RSAPrivateKey) -> bytes:
    return urlencode(signed(params, private_key)).encode()


@dataclass
class SimulationReport:
    """What was sent and what the order service accepted."""

    sent: int = 0
    duplicates_sent: int = 0
    accepted_orders: int = 0          # distinct orders answered `success`
    accepted_amount_cents: int = 0
    refused: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    accepted_ids: set[str] = field(default_factory=set, repr=False)

    def summary(self) -> str:
        return (f"sent {self.sent} notifies ({self.duplicates_sent} duplicates); "
                f"accepted {self.accepted_orders} orders, {format_amount(self.accepted_amount_cents)} yuan; "
                f"refused {self.refused}, errors {self.errors}")


class PaymentSimulator:
    """Posts signed notifies at a steady rate to one order service."""

    def __init__(self, settings: Settings, private_key: rsa.RSAPrivateKey, *, url: str | None = None,
                 duplicate_share: float = 0.05, seed: int | None = None, min_cents: int = 100,
                 max_cents: int = 50_000, max_clients: int = 64):
        if not 0 <= duplicate_share < 1:
            raise ValueError("duplicate share must be in [0, 1)")
        self.settings = settings
        self.private_key = private_key
        self.url = url or f"http://{settings.bind_host}:{settings.order_service_port}{NOTIFY_PATH}"
        self.duplicate_share = duplicate_share
        self.rng = random.Random(seed)
        self.min_cents, self.max_cents = min_cents, max_cents
        self.run_id = uuid.uuid4().hex[:8]
        self.max_clients = max_clients
        self.client: AsyncHTTPClient | None = None  # made on the running loop, in `post`
        self.report = SimulationReport()
        self._sent_bodies: list[tuple[str, int, bytes]] = []

    def next_payment(self, n: int) -> tuple[str, int, bytes, bool]:
        """(order id, amount, body, is_duplicate) of the n-th notify."""
        if self._sent_bodies and self.rng.random() < self.duplicate_share:
            order_id, cents, body = self.rng.choice(self._sent_bodies)
            return order_id, cents, body, True
        order_id = f"SIM{self.run_id}{n:08d}"
        cents = self.rng.randint(self.min_cents, self.max_cents)
        params = notify_params(order_id, cents, settings=self.settings, paid_at=datetime.now(self.settings.tz))
        body = notify_body(params, self.private_key)
        self._sent_bodies.append((order_id, cents, body))
        return order_id, cents, body, False

    async def post(self, order_id: str, cents: int, body: bytes, duplicate: bool,
                   on_reply=None) -> None:
        started = time.perf_counter()
        self.report.sent += 1
        self.report.duplicates_sent += duplicate
        if self.client is None:
            self.client = AsyncHTTPClient(force_instance=True, max_clients=self.max_clients)
        try:
            resp = await self.client.fetch(HTTPRequest(self.url, method="POST", headers=FORM, body=body,
                                                       request_timeout=30))
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
                  on_tick=None, on_reply=None) -> SimulationReport:
        """Send `count` notifies, or for `duration` seconds, at `rate` per second."""
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
