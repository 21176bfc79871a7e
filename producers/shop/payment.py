"""The shop's client of the payment provider: hand over a payment, get its id back.

The provider (producers.provider) answers ``POST /pay`` at once with a
``trade_no`` and later sends the signed notify to ``notify_url``, which is the
gateway's public notify path by default (rtdash.payments.default_notify_url;
the order service owns payments).
"""
from __future__ import annotations

import json
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from rtdash.settings import Settings

log = logging.getLogger("rtdash.shop.payment")

PAY_TIMEOUT_S = 5.0


class PaymentError(RuntimeError):
    """The provider did not take the payment (down, slow, or refused it)."""


def default_provider_url(settings: Settings) -> str:
    """The local payment provider simulator."""
    return f"http://127.0.0.1:{settings.payment_provider_port}"


class PaymentClient:
    """POSTs payments to the provider; one HTTP client made lazily on the running loop."""

    def __init__(self, provider_url: str, notify_url: str):
        self.pay_url = provider_url.rstrip("/") + "/pay"
        self.notify_url = notify_url
        self._client: AsyncHTTPClient | None = None

    async def pay(self, order_id: str, amount_cents: int) -> str:
        """The provider's trade_no for this payment; raises PaymentError."""
        if self._client is None:
            self._client = AsyncHTTPClient(force_instance=True)
        body = json.dumps({"out_trade_no": order_id, "amount_cents": amount_cents,
                           "notify_url": self.notify_url})
        try:
            resp = await self._client.fetch(HTTPRequest(
                self.pay_url, method="POST", body=body, headers={"Content-Type": "application/json"},
                request_timeout=PAY_TIMEOUT_S))
            return str(json.loads(resp.body)["trade_no"])
        except HTTPClientError as exc:
            detail = exc.response.body.decode(errors="replace")[:200] if exc.response else str(exc)
            raise PaymentError(f"provider answered {exc.code}: {detail}") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise PaymentError(f"provider unreachable: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
