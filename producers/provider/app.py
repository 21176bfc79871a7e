"""The payment provider simulator's HTTP surface and its notify sender.

``POST /pay`` with JSON ``{"out_trade_no", "amount_cents", "notify_url"?}``
answers at once with ``{"trade_no": ...}``. After a short delay the
`Notifier` posts the signed Alipay-style async notify (producers.payment_provider)
to ``notify_url`` and, as Alipay does, re-sends the same notify with growing
pauses until the reply body is ``success`` or the attempts run out. A repeated
``/pay`` for the same order and amount returns the same trade_no and sends
nothing new; the same order with another amount is refused (409).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from producers.payment_provider import FORM, NOTIFY_PATH, notify_body, notify_params
from rtdash.payments import MAX_AMOUNT_CENTS, format_amount
from rtdash.settings import Settings
from rtdash.web import JsonHandler

log = logging.getLogger("rtdash.provider")

_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
REMEMBERED_PAYMENTS = 100_000


def default_notify_url(settings: Settings) -> str:
    """The gateway's public notify path: where payments of the shop are reported."""
    return f"http://127.0.0.1:{settings.gateway_port}{NOTIFY_PATH}"


@dataclass
class NotifyStats:
    accepted: int = 0       # payments taken by /pay
    delivered: int = 0      # notifies answered `success`
    given_up: int = 0       # notifies never answered `success`
    attempts: int = 0       # notify POSTs sent


class Notifier:
    """Sends each payment's signed notify in a background task, retrying with backoff."""

    def __init__(self, settings: Settings, private_key: rsa.RSAPrivateKey, *, delay_s: float = 0.05,
                 max_attempts: int = 8, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 timeout_s: float = 10.0):
        self.settings = settings
        self.private_key = private_key
        self.delay_s = delay_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.stats = NotifyStats()
        self.payments: OrderedDict[str, tuple[int, str]] = OrderedDict()  # out_trade_no -> (cents, trade_no)
        self._tasks: set[asyncio.Task] = set()
        self._client: AsyncHTTPClient | None = None

    def pay(self, out_trade_no: str, amount_cents: int, notify_url: str) -> tuple[str, bool]:
        """(trade_no, is_new); schedules the notify of a new payment. Raises ValueError on a conflict."""
        known = self.payments.get(out_trade_no)
        if known is not None:
            if known[0] != amount_cents:
                raise ValueError("order already paid with a different amount")
            return known[1], False
        params = notify_params(out_trade_no, amount_cents, settings=self.settings,
                               paid_at=datetime.now(self.settings.tz))
        self.payments[out_trade_no] = (amount_cents, params["trade_no"])
        if len(self.payments) > REMEMBERED_PAYMENTS:
            self.payments.popitem(last=False)
        self.stats.accepted += 1
        task = asyncio.create_task(self._deliver(params, notify_url, amount_cents))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return params["trade_no"], True

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _deliver(self, params: dict[str, str], url: str, cents: int) -> bool:
        order, body = params["out_trade_no"], notify_body(params, self.private_key)
        if self._client is None:
            self._client = AsyncHTTPClient(force_instance=True)
        await asyncio.sleep(self.delay_s)
        for attempt in range(1, self.max_attempts + 1):
            self.stats.attempts += 1
            try:
                resp = await self._client.fetch(HTTPRequest(url, method="POST", headers=FORM, body=body,
                                                            request_timeout=self.timeout_s))
                outcome = resp.body.decode(errors="replace")[:200]
            except HTTPClientError as exc:
                outcome = f"HTTP {exc.code} " + (exc.response.body.decode(errors="replace")[:200]
                                                 if exc.response is not None else str(exc))
            except OSError as exc:
                outcome = f"unreachable: {exc}"
            if outcome.strip() == "success":
                self.stats.delivered += 1
                log.info("notify for order %s (%s yuan) delivered on attempt %d", order, format_amount(cents),
                         attempt)
                return True
            if attempt == self.max_attempts:
                break
            pause = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            log.warning("notify for order %s attempt %d: %s; retrying in %.2fs", order, attempt, outcome, pause)
            await asyncio.sleep(pause)
        self.stats.given_up += 1
        log.error("notify for order %s not accepted after %d attempts (last: %s); giving up", order,
                  self.max_attempts, outcome)
        return False

    async def drain(self) -> None:
        """Wait until every notify scheduled so far is delivered or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel pending notifies (their orders stay unpaid) and close the HTTP client."""
        tasks = list(self._tasks)
        if tasks:
            log.warning("stopping with %d notifies undelivered", len(tasks))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            self._client.close()
            self._client = None


class ProviderHandler(JsonHandler):
    def initialize(self, *, settings: Settings, notifier: Notifier) -> None:
        self.cfg = settings
        self.notifier = notifier


class PayHandler(ProviderHandler):
    def post(self) -> None:
        try:
            data = json.loads(self.request.body or b"")
        except (UnicodeDecodeError, ValueError):
            raise tornado.web.HTTPError(400, "body must be a JSON object") from None
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, "body must be a JSON object")
        order, cents = data.get("out_trade_no"), data.get("amount_cents")
        url = data.get("notify_url") or default_notify_url(self.cfg)
        if not isinstance(order, str) or not _ID.match(order):
            raise tornado.web.HTTPError(400, "out_trade_no must be 1-64 letters, digits, '_' or '-'")
        if isinstance(cents, bool) or not isinstance(cents, int) or not 0 < cents <= MAX_AMOUNT_CENTS:
            raise tornado.web.HTTPError(400, "amount_cents must be a positive whole number of cents")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise tornado.web.HTTPError(400, "notify_url must be an http(s) URL")
        try:
            trade_no, new = self.notifier.pay(order, cents, url)
        except ValueError as exc:
            raise tornado.web.HTTPError(409, str(exc)) from None
        log.info("payment %s for order %s: %s yuan%s", trade_no, order, format_amount(cents),
                 "" if new else " (repeated request, same payment)")
        self.finish({"trade_no": trade_no, "out_trade_no": order, "amount_cents": cents})


class HealthHandler(ProviderHandler):
    def get(self) -> None:
        stats = self.notifier.stats
        self.finish({"status": "ok", "service": "payment_provider", "in_flight": self.notifier.in_flight,
                     "accepted": stats.accepted, "delivered": stats.delivered, "given_up": stats.given_up,
                     "attempts": stats.attempts})


def make_app(settings: Settings, *, notifier: Notifier) -> tornado.web.Application:
    deps = dict(settings=settings, notifier=notifier)
    return tornado.web.Application([
        (r"/pay", PayHandler, deps),
        (r"/healthz", HealthHandler, deps),
    ])
