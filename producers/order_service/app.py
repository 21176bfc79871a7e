"""The order service's HTTP surface: the payment notify endpoint and /healthz.

The handler is small on purpose: parse the form, verify and parse the notify
(rtdash.payments), hand the store call to the database executor, reply. The
reply is ``success`` for a new paid order, a duplicate, or an accepted
non-paid status (so the provider stops retrying), and a 4xx with the reason
otherwise; a refused notify writes nothing.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa

from rtdash.payments import NotifyError, format_amount, parse_notify
from rtdash.settings import Settings

from .relay import OutboxRelay, RelayProcess
from .store import OrderStore, Outcome
from .writer import GroupWriter

log = logging.getLogger("rtdash.order_service")

NOTIFY_PATH = "/order_center/order/alipay/callback"


class NotifyHandler(tornado.web.RequestHandler):
    def initialize(self, *, settings: Settings, writer: GroupWriter, public_key: rsa.RSAPublicKey) -> None:
        self.cfg = settings
        self.writer = writer
        self.public_key = public_key

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    async def post(self) -> None:
        try:
            params = self._form()
            notify = parse_notify(params, public_key=self.public_key, app_id=self.cfg.payment_app_id,
                                  seller_id=self.cfg.payment_seller_id, tz=self.cfg.tz)
        except NotifyError as exc:
            return self._refuse(exc.args[0], exc.status)
        if not notify.is_paid:
            log.info("notify %s for order %s: status %s, nothing to count",
                     notify.notify_id, notify.out_trade_no, notify.trade_status)
            return self.finish("success")
        outcome = await self.writer.record(notify)
        if outcome is Outcome.CONFLICT:
            log.warning("order %s: notify %s says %s yuan, a different amount was already paid; refused",
                        notify.out_trade_no, notify.notify_id, format_amount(notify.amount_cents))
            return self._refuse("order already paid with a different amount", status=409)
        log.info("order %s %s: %s yuan (notify %s)", notify.out_trade_no, outcome.value,
                 format_amount(notify.amount_cents), notify.notify_id)
        self.finish("success")

    def _form(self) -> dict[str, str]:
        if len(self.request.body) > self.cfg.notify_max_body_bytes:
            raise NotifyError(f"body larger than {self.cfg.notify_max_body_bytes} bytes", status=413)
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise NotifyError("Content-Type must be application/x-www-form-urlencoded")
        # Tornado has already parsed the form into body_arguments; reuse it rather than parse twice.
        params = {}
        try:
            for name, values in self.request.body_arguments.items():
                if len(values) != 1:
                    raise NotifyError("a parameter appears twice")
                if "%" in name or "=" in name:
                    raise NotifyError("body is not a valid form")
                params[name] = values[0].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotifyError("body is not a valid form") from exc
        return params

    def _refuse(self, reason: str, status: int = 400) -> None:
        if status != 409:
            log.warning("notify refused from %s: %s", self.request.remote_ip, reason)
        self.set_status(status)
        self.finish(f"fail: {reason}")


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, *, store: OrderStore, db: Executor, relay: OutboxRelay | RelayProcess) -> None:
        self.store = store
        self.db = db
        self.relay = relay

    async def get(self) -> None:
        pending = await asyncio.get_running_loop().run_in_executor(self.db, self.store.pending_count)
        status = self.relay.status
        self.finish({"status": "ok", "service": "order_service", "outbox_pending": pending,
                     "published": status.published, "kafka_connected": status.kafka_connected,
                     "last_error": status.last_error})


def make_app(settings: Settings, *, store: OrderStore, db: Executor, relay: OutboxRelay | RelayProcess,
             public_key: rsa.RSAPublicKey, writer: GroupWriter | None = None) -> tornado.web.Application:
    """The service's routes; `writer` defaults to a group writer over `store` and `db`."""
    writer = writer or GroupWriter(store, db)
    return tornado.web.Application([
        (NOTIFY_PATH, NotifyHandler, dict(settings=settings, writer=writer, public_key=public_key)),
        (r"/healthz", HealthHandler, dict(store=store, db=db, relay=relay)),
    ])
