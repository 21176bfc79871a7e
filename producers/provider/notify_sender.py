"""The provider's notify sender: each payment's signed notify, sent and re-sent until ``success``.

As Alipay does, the provider posts the same signed notify (rtdash.payments)
to the payment's ``notify_url`` after a short delay, and again, after pauses
doubling from `backoff_s` up to `max_backoff_s` (rtdash.retry), until the
reply body is ``success`` or `max_attempts` posts were made; then it gives
up and logs it. Each payment is remembered (the newest `REMEMBERED_PAYMENTS`)
so that a repeated ``/pay`` is the same payment and sends nothing new.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from rtdash.payments import FORM_HEADERS, format_amount, notify_body, notify_params
from rtdash.retry import async_retrying
from rtdash.settings import Settings

log = logging.getLogger("rtdash.provider")

REMEMBERED_PAYMENTS = 100_000
NOTIFY_TIMEOUT_S = 10.0


class AmountConflict(ValueError):
    """The order was already paid with another amount."""


class NotDelivered(RuntimeError):
    """A notify post that was not answered ``success``; the message is what came back instead."""


@dataclass
class NotifyStats:
    accepted: int = 0       # payments taken by /pay
    delivered: int = 0      # notifies answered `success`
    given_up: int = 0       # notifies never answered `success`
    attempts: int = 0       # notify POSTs sent


class NotifySender:
    """Sends each payment's signed notify in a background task, re-sending it with growing pauses."""

    def __init__(self, settings: Settings, private_key: rsa.RSAPrivateKey, *, delay_s: float = 0.05,
                 max_attempts: int = 8, backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        self.settings = settings
        self.private_key = private_key
        self.delay_s = delay_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = NotifyStats()
        self.payments: OrderedDict[str, tuple[int, str]] = OrderedDict()  # out_trade_no -> (cents, trade_no)
        self._tasks: set[asyncio.Task] = set()
        self._client: AsyncHTTPClient | None = None

    def pay(self, out_trade_no: str, amount_cents: int, notify_url: str) -> tuple[str, bool]:
        """(trade_no, is_new); schedules the notify of a new payment. Raises AmountConflict."""
        known = self.payments.get(out_trade_no)
        if known is not None:
            if known[0] != amount_cents:
                raise AmountConflict("order already paid with a different amount")
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
        try:
            async for attempt in async_retrying(first_s=self.backoff_s, max_s=self.max_backoff_s,
                                                attempts=self.max_attempts, on=NotDelivered, log=log,
                                                what=f"notify for order {order}"):
                with attempt:
                    await self._post(url, body)
        except NotDelivered as exc:
            self.stats.given_up += 1
            log.error("notify for order %s not accepted after %d attempts (last: %s); giving up", order,
                      self.max_attempts, exc)
            return False
        self.stats.delivered += 1
        log.info("notify for order %s (%s yuan) delivered on attempt %d", order, format_amount(cents),
                 attempt.retry_state.attempt_number)
        return True

    async def _post(self, url: str, body: bytes) -> None:
        """Post the notify once; raises NotDelivered unless the reply body is ``success``."""
        self.stats.attempts += 1
        try:
            resp = await self._client.fetch(HTTPRequest(url, method="POST", headers=FORM_HEADERS, body=body,
                                                        request_timeout=NOTIFY_TIMEOUT_S))
            outcome = resp.body.decode(errors="replace")[:200]
        except HTTPClientError as exc:
            outcome = f"HTTP {exc.code} " + (exc.response.body.decode(errors="replace")[:200]
                                             if exc.response is not None else str(exc))
        except OSError as exc:
            outcome = f"unreachable: {exc}"
        if outcome.strip() != "success":
            raise NotDelivered(outcome)

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
