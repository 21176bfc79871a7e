"""The SMS gateway client and the confirmation text: one blocking call per message, for the consumer thread."""
from __future__ import annotations

import enum
import json
import urllib.error
import urllib.request

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
    """Posts messages to the SMS gateway's ``/messages`` (no proxy from the environment: it is a local peer)."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0):
        self.url = base_url.rstrip("/") + "/messages"
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def send(self, to: str, text: str, idempotency_key: str) -> Delivery:
        body = json.dumps({"to": to, "text": text, "idempotency_key": idempotency_key}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                reply = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}: {_reason(exc.read(1000))}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise MessageRejected(detail) from None
            raise GatewayUnavailable(detail) from None
        except (OSError, ValueError) as exc:   # refused, reset, timed out; a reply that is not JSON
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from None
        return Delivery.DUPLICATE if reply.get("status") == "duplicate" else Delivery.SENT


def _reason(body: bytes) -> str:
    """The gateway's ``{"error": ...}``, or the start of whatever else answered."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode(errors="replace")
