"""The SMS gateway client and the confirmation text: one blocking call per message, for the consumer thread."""
from __future__ import annotations

import enum
import json
from io import BytesIO

import pycurl

from rtdash.contracts import OrderPaid
from rtdash.payments import format_amount

# OrderPaid carries no customer contact: every confirmation goes to one configured number.
DEMO_RECIPIENT = "+8613800000000"


class Delivery(enum.Enum):
    SENT = "sent"              # the gateway recorded the message now
    DUPLICATE = "duplicate"    # the gateway had a message with this key already; nothing new was sent


class GatewayUnavailable(Exception):
    """The gateway did not take the message (unreachable, timed out, 5xx, 429): try again later."""


class MessageRejected(Exception):
    """The gateway refused the message itself (4xx): sending it again would not help."""


def confirmation(event: OrderPaid) -> str:
    return (f"rtdash: we received your payment of {format_amount(event.amount_cents)} yuan for order "
            f"{event.order_id} (transaction {event.trade_no}). Thank you!")


class SmsClient:
    """Posts messages to the SMS gateway's ``/messages`` over one kept-alive connection (libcurl's).

    A paid order is a message, hundreds a second at a busy hour: a new TCP
    connection for each costs both ends more CPU than a kept-alive one
    (BENCHMARKS.md, traffic_freshness). libcurl reconnects by itself when the
    gateway closed the connection. No proxy from the environment: the gateway
    is a local peer. One client per thread (a libcurl handle is not shared).
    """

    def __init__(self, base_url: str, *, timeout_s: float = 5.0):
        self.url = base_url.rstrip("/") + "/messages"
        self.timeout_s = timeout_s
        self._curl = pycurl.Curl()
        self._curl.setopt(pycurl.URL, self.url)
        self._curl.setopt(pycurl.NOPROXY, "*")
        self._curl.setopt(pycurl.HTTPHEADER, ["Content-Type: application/json", "Expect:"])
        self._curl.setopt(pycurl.TIMEOUT_MS, int(timeout_s * 1000))
        self._curl.setopt(pycurl.NOSIGNAL, 1)   # timeouts without SIGALRM: the consumer is not the main thread

    def send(self, to: str, text: str, idempotency_key: str) -> Delivery:
        body = json.dumps({"to": to, "text": text, "idempotency_key": idempotency_key}).encode()
        reply = BytesIO()
        self._curl.setopt(pycurl.POSTFIELDS, body)
        self._curl.setopt(pycurl.WRITEDATA, reply)
        try:
            self._curl.perform()
        except pycurl.error as exc:   # refused, reset, timed out
            raise GatewayUnavailable(f"{exc.args[-1]}") from None
        code = self._curl.getinfo(pycurl.RESPONSE_CODE)
        if code >= 400:
            detail = f"HTTP {code}: {_reason(reply.getvalue()[:1000])}"
            if code < 500 and code not in (408, 429):
                raise MessageRejected(detail)
            raise GatewayUnavailable(detail)
        try:
            status = json.loads(reply.getvalue()).get("status")
        except ValueError as exc:    # a reply that is not JSON
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from None
        return Delivery.DUPLICATE if status == "duplicate" else Delivery.SENT

    def close(self) -> None:
        self._curl.close()


def _reason(body: bytes) -> str:
    """The gateway's ``{"error": ...}``, or the start of whatever else answered."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode(errors="replace")
