"""The order service's HTTP surface: the payment notify endpoint, /healthz and /metrics.

The notify endpoint is small on purpose: read the body, hand it to the group
writer (writer.py), which takes it with whatever else is waiting to the order
store process (store_process.py, then intake.py: read the form, verify,
parse, store); write the reply it comes back with. The reply is ``success``
for a notify that pays its order, a duplicate, or an accepted non-paid status
(so the provider stops retrying); 404 for an order the shop never placed
(internal.py), 409 for another amount than the order's, and a 4xx with the
reason otherwise; a refused notify writes nothing.

It is the service's hot path, so it is served one level below tornado.web,
as a message delegate of Tornado's HTTP server: a RequestHandler's
per-request machinery (a handler object, default headers, output transforms,
the Date header) costs several times what the delegate does (BENCHMARKS.md).
Everything else, /healthz, /metrics and the 404s, is a plain tornado.web application:
`NotifyEndpoint` looks at the request line's path and hands any other request
to it. (Tornado's `RuleRouter` would build a whole `HTTPServerRequest` for
every notify just to match its path.)
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from concurrent.futures import Executor

import tornado.web
from tornado import httputil
from tornado.iostream import StreamClosedError

from rtdash.metrics import metrics_route
from rtdash.payments import FORM_TYPE, NOTIFY_PATH, NotifyError
from rtdash.settings import Settings

from .handoff import Received, RelayStatus, Reply
from .metrics import NOTIFIES, REGISTRY, OutboxCollector
from .store import OrderStore
from .writer import GroupWriter

log = logging.getLogger("rtdash.order_service")

REPLY_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}


class NotifyEndpoint(httputil.HTTPServerConnectionDelegate):
    """``POST NOTIFY_PATH``: one `NotifyRequest` per request, answered through `take`.

    Requests for any other path go to `other` (the tornado.web application).
    """

    def __init__(self, *, max_body_bytes: int, writer: GroupWriter,
                 other: httputil.HTTPServerConnectionDelegate) -> None:
        self.max_body_bytes = max_body_bytes
        self.writer = writer
        self.other = other

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> "NotifyRequest":
        return NotifyRequest(self, server_conn, request_conn)

    def take(self, method: str, content_type: str, body: bytes | None, remote_ip: str) -> "asyncio.Future[Reply]":
        """The reply to one request, once known: at once for a refusal, else when its group is through
        the intake. `body` is None when it was over the size limit."""
        if method != "POST":
            NOTIFIES.labels(result="refused_request").inc()
            return _done(Reply(405, "fail: the payment notify is a POST"))
        if body is None:
            return self._refuse(remote_ip, NotifyError(f"body larger than {self.max_body_bytes} bytes", status=413))
        if content_type.split(";")[0].strip().lower() != FORM_TYPE:
            return self._refuse(remote_ip, NotifyError(f"Content-Type must be {FORM_TYPE}"))
        return self.writer.submit(Received(body, remote_ip))

    @staticmethod
    def _refuse(remote_ip: str, exc: NotifyError) -> "asyncio.Future[Reply]":
        NOTIFIES.labels(result="refused_request").inc()
        log.warning("notify refused from %s: %s", remote_ip, exc.args[0])
        return _done(Reply(exc.status, f"fail: {exc.args[0]}"))


def _done(reply: Reply) -> "asyncio.Future[Reply]":
    future = asyncio.get_running_loop().create_future()
    future.set_result(reply)
    return future


class NotifyRequest(httputil.HTTPMessageDelegate):
    """One request on its way through: a notify collects its body, then writes the endpoint's reply.

    No task per notify: the reply is written by a callback on the future that
    `NotifyEndpoint.take` returns. A request for another path is passed, from
    its request line on, to the delegate of the endpoint's `other` application.
    """

    def __init__(self, endpoint: NotifyEndpoint, server_conn: object, conn: httputil.HTTPConnection) -> None:
        self.endpoint = endpoint
        self.server_conn = server_conn
        self.conn = conn
        self.limit = endpoint.max_body_bytes
        self.method = ""
        self.content_type = ""
        self.body: bytearray | None = bytearray()   # None once it grew past the limit
        self.other: httputil.HTTPMessageDelegate | None = None
        self.remote_ip = getattr(getattr(conn, "context", None), "remote_ip", "an unknown address")

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        if start_line.path.partition("?")[0] != NOTIFY_PATH:
            self.other = self.endpoint.other.start_request(self.server_conn, self.conn)
            return self.other.headers_received(start_line, headers)
        self.method = start_line.method
        self.content_type = headers.get("Content-Type", "")
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.other is not None:
            return self.other.data_received(chunk)
        if self.body is not None:
            self.body += chunk
            if len(self.body) > self.limit:
                self.body = None  # keep reading (the server's own limit ends a huge one) but keep nothing
        return None

    def finish(self) -> None:
        if self.other is not None:
            self.other.finish()
            return
        body = None if self.body is None else bytes(self.body)
        self.endpoint.take(self.method, self.content_type, body, self.remote_ip).add_done_callback(self._write)

    def on_connection_close(self) -> None:
        if self.other is not None:
            self.other.on_connection_close()

    def _write(self, reply: "asyncio.Future[Reply]") -> None:
        try:
            status, text = reply.result()
        except Exception as exc:  # noqa: BLE001 - the provider retries on a 5xx; the reason is in the log
            log.error("notify from %s not taken in: %s", self.remote_ip, exc)
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
    """``GET /healthz``: the outbox backlog (read on `db`) and the relay's view of Kafka."""

    def initialize(self, *, store: OrderStore, db: Executor, relay_status: RelayStatus) -> None:
        self.store = store
        self.db = db
        self.relay_status = relay_status

    async def get(self) -> None:
        pending = await asyncio.get_running_loop().run_in_executor(self.db, self.store.pending_count)
        status = self.relay_status
        self.finish({"status": "ok", "service": "order_service", "outbox_pending": pending,
                     "published": status.published, "kafka_connected": status.kafka_connected,
                     "last_error": status.last_error})


def make_app(settings: Settings, *, writer: GroupWriter, store: OrderStore, db: Executor,
             relay_status: RelayStatus) -> NotifyEndpoint:
    """The service's routes, for `tornado.httpserver.HTTPServer`.

    Notifies go to `writer`; /healthz reads the outbox through `store` on `db`
    and the relay's counters from `relay_status`; /metrics serves
    order_service/metrics.py (both processes' values in multiprocess mode) and
    the same outbox figures.
    """
    outbox = OutboxCollector(relay_status)

    async def read_backlog() -> None:
        outbox.backlog = await asyncio.get_running_loop().run_in_executor(db, store.pending_count)

    other = tornado.web.Application([(r"/healthz", HealthHandler,
                                      dict(store=store, db=db, relay_status=relay_status)),
                                     metrics_route(REGISTRY, refresh=read_backlog, collectors=[outbox])])
    return NotifyEndpoint(max_body_bytes=settings.notify_max_body_bytes, writer=writer, other=other)
