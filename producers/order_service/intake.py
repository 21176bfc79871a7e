"""Payment notify intake: read, verify, parse and store a group of notifies, with the reply each one gets.

The HTTP process only reads each notify's body; everything after that
happens here, one group at a time, in the order store process: the form is
read, the RSA2 signature is checked before any field is interpreted, then the
notify is parsed, and the paid ones of the group are stored in one
transaction (`OrderStore.record_paid_many`).

Why here and not in the HTTP handler: this work costs the event loop more,
done one notify at a time between other requests, than it costs done back to
back for a whole group in the process that stores it; the event loop every
request passes through keeps only the HTTP (BENCHMARKS.md, notify path).
"""
from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric import rsa

from rtdash.payments import NotifyError, PaymentNotify, form_params, format_amount, parse_notify

from .handoff import Received, Reply
from .store import OrderStore, Outcome

log = logging.getLogger("rtdash.order_service")

SUCCESS = Reply(200, "success")
CONFLICT = Reply(409, "fail: order already paid with a different amount")


class NotifyIntake:
    """Turns groups of `Received` notifies into replies, storing the paid ones (runs in the store process)."""

    def __init__(self, store: OrderStore, *, public_key: rsa.RSAPublicKey, app_id: str,
                 seller_id: str | None, tz: ZoneInfo):
        self.store = store
        self.public_key = public_key
        self.app_id = app_id
        self.seller_id = seller_id
        self.tz = tz

    def accept(self, group: list[Received]) -> list[Reply]:
        """One reply per notify, in order; the paid ones are stored in one transaction.

        `success` for a newly paid order, a duplicate, or a valid notify that
        does not pay (so the provider stops sending it); 409 for a known order
        with another amount; 4xx with the reason for a notify that is refused.
        A failing database raises: the whole group is answered 5xx and sent again.
        """
        replies: list[Reply] = [SUCCESS] * len(group)
        paid: list[tuple[int, PaymentNotify]] = []
        for i, received in enumerate(group):
            try:
                notify = parse_notify(form_params(received.body), public_key=self.public_key,
                                      app_id=self.app_id, seller_id=self.seller_id, tz=self.tz)
            except NotifyError as exc:
                log.warning("notify refused from %s: %s", received.remote_ip, exc.args[0])
                replies[i] = Reply(exc.status, f"fail: {exc.args[0]}")
                continue
            if notify.is_paid:
                paid.append((i, notify))
            else:
                log.info("notify %s for order %s: status %s, nothing to count",
                         notify.notify_id, notify.out_trade_no, notify.trade_status)
        if paid:
            outcomes = self.store.record_paid_many([notify for _, notify in paid])
            for (i, notify), outcome in zip(paid, outcomes):
                if outcome is Outcome.CONFLICT:
                    log.warning("order %s: notify %s says %s yuan, a different amount was already paid; refused",
                                notify.out_trade_no, notify.notify_id, format_amount(notify.amount_cents))
                    replies[i] = CONFLICT
                else:
                    log.info("order %s %s: %s yuan (notify %s)", notify.out_trade_no, outcome.value,
                             format_amount(notify.amount_cents), notify.notify_id)
        return replies
