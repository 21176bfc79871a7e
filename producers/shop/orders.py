"""The shop's client of the order service's internal API: place each order before it is paid, read its status.

The order service owns the order's payment: a notify pays an order only if
the shop placed it there first, with its amount (producers/order_service/
internal.py). The shop asks it for the status of an order it still shows
pending, when that order is looked at, rather than being called back: no
second delivery path to keep reliable, and the order service's word is the
one that counts.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from producers.order_service.internal import PLACE_ORDER_PATH

log = logging.getLogger("rtdash.shop.orders")

ORDER_SERVICE_TIMEOUT_S = 5.0


class OrderServiceError(RuntimeError):
    """The order service did not take the order or answer about it (down, slow, or refused it)."""


class OrderServiceClient:
    """Places orders and reads their status; one HTTP client made lazily on the running loop."""

    def __init__(self, base_url: str):
        self.orders_url = base_url.rstrip("/") + PLACE_ORDER_PATH
        self._client: AsyncHTTPClient | None = None

    async def place(self, order_id: str, amount_cents: int) -> None:
        """Place the order with its amount (again is fine: the same order and amount are one order)."""
        await self._call(HTTPRequest(self.orders_url, method="POST", headers={"Content-Type": "application/json"},
                                     body=json.dumps({"order_id": order_id, "amount_cents": amount_cents}),
                                     request_timeout=ORDER_SERVICE_TIMEOUT_S))

    async def status(self, order_id: str) -> str:
        """``pending`` or ``paid`` as the order service has it, ``unknown`` if it was never placed there;
        raises OrderServiceError."""
        try:
            body = await self._call(HTTPRequest(f"{self.orders_url}/{quote(order_id, safe='')}",
                                                request_timeout=ORDER_SERVICE_TIMEOUT_S))
        except OrderServiceError as exc:
            if isinstance(exc.__cause__, HTTPClientError) and exc.__cause__.code == 404:
                return "unknown"
            raise
        status = body.get("status") if isinstance(body, dict) else None
        if status not in ("pending", "paid"):
            raise OrderServiceError(f"order service answered status {status!r}")
        return status

    async def _call(self, request: HTTPRequest) -> dict:
        if self._client is None:
            self._client = AsyncHTTPClient(force_instance=True)
        try:
            resp = await self._client.fetch(request)
            return json.loads(resp.body)
        except HTTPClientError as exc:
            detail = exc.response.body.decode(errors="replace")[:200] if exc.response else str(exc)
            raise OrderServiceError(f"order service answered {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise OrderServiceError(f"order service unreachable: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
