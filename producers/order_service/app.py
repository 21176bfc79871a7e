"""The order service's HTTP surface: the payment notify endpoint and /healthz.

The notify endpoint is small on purpose: read the form and hand it to the
group writer, whose groups go through the notify intake (intake.py: verify,
parse, store) in the order store process; reply. The reply is ``success``
for a new paid order, a duplicate, or an accepted non-paid status (so the
provider stops retrying), and a 4xx with the reason otherwise; a refused
notify writes nothing.

It is the service's hot path, so it is served one level below tornado.web, as
a message delegate of Tornado's HTTP server: at 1,500 notifies/s on two cores,
RequestHandler's per-request machinery (a handler object, default headers,
output transforms, the Date header) cost two to three times what a message
delegate costs under the same load (BENCHMARKS.md). Everything else, /healthz and the 404s, is a
plain tornado.web application behind the same router.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado import httputil
from tornado.iostream import StreamClosedError
from tornado.routing import AnyMatches, PathMatches, Rule, RuleRouter

from rtdash.payments import NotifyError, form_params
from rtdash.settings import Settings

from .intake import NotifyIntake, Received, Reply
from .relay import OutboxRelay
from .store import OrderStore
from .store_process import StoreProcess
from .writer import GroupWriter, commit_in_executor

log = logging.getLogger("rtdash.order_service")

NOTIFY_PATH = "/order_center/order/alipay/callback"
FORM_TYPE = "application/x-www-form-urlencoded"
REPLY_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}


class NotifyEndpoint(httputil.HTTPServerConnectionDelegate):
    """``POST NOTIFY_PATH``: one `NotifyRequest` per request, answered by `reply_to`."""

    def __init__(self, *, settings: Settings, writer: GroupWriter) -> None:
        self.cfg = settings
        self.writer = writer
        self.replying: set[asyncio.Task] = set()   # strong references until each reply is written

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> "NotifyRequest":
        return NotifyRequest(self, request_conn)

    async def reply_to(self, method: str, content_type: str, body: bytes | None, remote_ip: str) -> Reply:
        """The reply to one request; `body` is None when it was over the size limit."""
        if method != "POST":
            return Reply(405, "fail: the payment notify is a POST")
        try:
            params = self._form(content_type, body)
        except NotifyError as exc:
            log.warning("notify refused from %s: %s", remote_ip, exc.args[0])
            return Reply(exc.status, f"fail: {exc.args[0]}")
        return await self.writer.record(Received(params, remote_ip))

    def _form(self, content_type: str, body: bytes | None) -> dict[str, str]:
        if body is None:
            raise NotifyError(f"body larger than {self.cfg.notify_max_body_bytes} bytes", status=413)
        if content_type.split(";")[0].strip().lower() != FORM_TYPE:
            raise NotifyError(f"Content-Type must be {FORM_TYPE}")
        return form_params(body)


class NotifyRequest(httputil.HTTPMessageDelegate):
    """One notify on its way through: collects the body, then writes the endpoint's reply."""

    def __init__(self, endpoint: NotifyEndpoint, conn: httputil.HTTPConnection) -> None:
        self.endpoint = endpoint
        self.conn = conn
        self.limit = endpoint.cfg.notify_max_body_bytes
        self.method = ""
        self.content_type = ""
        self.body: bytearray | None = bytearray()   # None once it grew past the limit

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.method = start_line.method
        self.content_type = headers.get("Content-Type", "")

    def data_received(self, chunk: bytes) -> None:
        if self.body is not None:
            self.body += chunk
            if len(self.body) > self.limit:
                self.body = None  # keep reading (the server's own limit ends a huge one) but keep nothing

    def finish(self) -> None:
        task = asyncio.ensure_future(self._reply())
        self.endpoint.replying.add(task)
        task.add_done_callback(self.endpoint.replying.discard)

    async def _reply(self) -> None:
        remote_ip = getattr(getattr(self.conn, "context", None), "remote_ip", "an unknown address")
        body = None if self.body is None else bytes(self.body)
        try:
            status, text = await self.endpoint.reply_to(self.method, self.content_type, body, remote_ip)
        except Exception as exc:  # noqa: BLE001 - the provider retries on a 5xx; the reason is in the log
            log.error("notify from %s not taken in: %s", remote_ip, exc)
            status, text = 500, "fail: internal error, retry later"
        payload = text.encode()
        headers = httputil.HTTPHeaders(REPLY_HEADERS)
        headers["Content-Length"] = str(len(payload))
        if status == 405:
            headers["Allow"] = "POST"
        try:
            self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, httputil.responses[status]),
                                    headers, payload)
            self.conn.finish()
        except StreamClosedError:
            pass  # the provider hung up first; it will send the notify again


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, *, store: OrderStore, db: Executor, relay: OutboxRelay | StoreProcess) -> None:
        self.store = store
        self.db = db
        self.relay = relay

    async def get(self) -> None:
        pending = await asyncio.get_running_loop().run_in_executor(self.db, self.store.pending_count)
        status = self.relay.status
        self.finish({"status": "ok", "service": "order_service", "outbox_pending": pending,
                     "published": status.published, "kafka_connected": status.kafka_connected,
                     "last_error": status.last_error})


def make_app(settings: Settings, *, store: OrderStore, db: Executor, relay: OutboxRelay | StoreProcess,
             public_key: rsa.RSAPublicKey, writer: GroupWriter | None = None) -> RuleRouter:
    """The service's routes, for `tornado.httpserver.HTTPServer`.

    `writer` defaults to the notify intake on `db`, a thread of this process;
    the service itself passes one whose groups go to the order store process.
    """
    if writer is None:
        intake = NotifyIntake(store, public_key=public_key, app_id=settings.payment_app_id,
                              seller_id=settings.payment_seller_id, tz=settings.tz)
        writer = GroupWriter(commit_in_executor(intake, db))
    return RuleRouter([
        Rule(PathMatches(NOTIFY_PATH), NotifyEndpoint(settings=settings, writer=writer)),
        Rule(AnyMatches(), tornado.web.Application([(r"/healthz", HealthHandler, dict(store=store, db=db,
                                                                                      relay=relay))])),
    ])
