"""The intake: read, verify and parse a group's notifies, store them with its placed orders, reply to each.

The HTTP process only reads each notify's body (and validates each order the
shop places); everything after that happens here, one group at a time, in the
order store process: the form is read, the RSA2 signature is checked before
any field is interpreted, then the notify is parsed; the group's placed
orders and verified notifies are then stored in one transaction
(`OrderStore.take_in`), which pays an order only for a notify that names it
with its own amount.

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

from .handoff import Item, PlaceOrder, Reply
from .metrics import GROUP_SIZE, NOTIFIES, refusal_result
from .store import OrderStore, Outcome

log = logging.getLogger("rtdash.order_service")

SUCCESS = Reply(200, "success")
UNKNOWN_ORDER = Reply(404, "fail: unknown order")
AMOUNT_DIFFERS = Reply(409, "fail: total_amount differs from the order's amount")
PLACED = Reply(201, "placed")
PLACED_BEFORE = Reply(200, "placed before")
PLACED_WITH_ANOTHER_AMOUNT = Reply(409, "placed before with another amount")

# A notify's outcome as rtdash_order_notifies_total counts it.
_RESULTS = {Outcome.PAID: "paid", Outcome.DUPLICATE: "duplicate", Outcome.NOT_PAID: "not_paid",
            Outcome.UNKNOWN_ORDER: "unknown_order", Outcome.AMOUNT_DIFFERS: "amount_differs"}


class NotifyIntake:
    """Turns groups of notifies and placed orders into replies, storing what they change (in the store process)."""

    def __init__(self, store: OrderStore, *, public_key: rsa.RSAPublicKey, app_id: str,
                 seller_id: str | None, tz: ZoneInfo):
        self.store = store
        self.public_key = public_key
        self.app_id = app_id
        self.seller_id = seller_id
        self.tz = tz

    def accept(self, group: list[Item]) -> list[Reply]:
        """One reply per item, in order; the group's changes are stored in one transaction.

        A notify gets `success` when it pays its order, repeats a payment, or
        is valid and pays nothing (so the provider stops sending it); 404 for
        an order never placed, 409 for another amount than the order's, and
        4xx with the reason for a notify that is refused before (signature,
        fields). A placed order gets 201, or 200 for the same order and
        amount again, or 409 for another amount. A failing database raises:
        the whole group is answered 5xx and sent again.
        """
        GROUP_SIZE.observe(len(group))
        replies: list[Reply] = [SUCCESS] * len(group)
        taken: list[tuple[int, PlaceOrder | PaymentNotify]] = []
        for i, item in enumerate(group):
            if isinstance(item, PlaceOrder):
                taken.append((i, item))
                continue
            try:
                notify = parse_notify(form_params(item.body), public_key=self.public_key,
                                      app_id=self.app_id, seller_id=self.seller_id, tz=self.tz)
            except NotifyError as exc:
                log.warning("notify refused from %s: %s", item.remote_ip, exc.args[0])
                NOTIFIES.labels(result=refusal_result(exc.args[0])).inc()
                replies[i] = Reply(exc.status, f"fail: {exc.args[0]}")
                continue
            taken.append((i, notify))
        if taken:
            outcomes = self.store.take_in([item for _, item in taken])
            for (i, item), outcome in zip(taken, outcomes):
                if isinstance(item, PlaceOrder):
                    replies[i] = self._placed(item, outcome)
                else:
                    replies[i] = self._notified(item, outcome, group[i].remote_ip)
        return replies

    @staticmethod
    def _placed(order: PlaceOrder, outcome: Outcome) -> Reply:
        if outcome is Outcome.PLACED:
            log.info("order %s placed: %s yuan", order.order_id, format_amount(order.amount_cents))
            return PLACED
        if outcome is Outcome.PLACED_BEFORE:
            return PLACED_BEFORE
        log.warning("order %s placed again with %s yuan, another amount; refused", order.order_id,
                    format_amount(order.amount_cents))
        return PLACED_WITH_ANOTHER_AMOUNT

    @staticmethod
    def _notified(notify: PaymentNotify, outcome: Outcome, remote_ip: str) -> Reply:
        NOTIFIES.labels(result=_RESULTS[outcome]).inc()
        if outcome is Outcome.UNKNOWN_ORDER:
            log.warning("notify %s from %s for order %s, which was never placed; refused", notify.notify_id,
                        remote_ip, notify.out_trade_no)
            return UNKNOWN_ORDER
        if outcome is Outcome.AMOUNT_DIFFERS:
            log.warning("notify %s from %s says %s yuan for order %s, not the order's amount; refused",
                        notify.notify_id, remote_ip, format_amount(notify.amount_cents), notify.out_trade_no)
            return AMOUNT_DIFFERS
        if outcome is Outcome.NOT_PAID:
            log.info("notify %s for order %s: status %s, nothing to count", notify.notify_id,
                     notify.out_trade_no, notify.trade_status)
        else:
            log.info("order %s %s: %s yuan (notify %s)", notify.out_trade_no, outcome.value,
                     format_amount(notify.amount_cents), notify.notify_id)
        return SUCCESS
