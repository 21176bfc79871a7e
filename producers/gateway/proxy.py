"""The reverse proxy's pass-through handler: one request to its route's upstream and back.

Every request whose path starts with a route prefix (longest prefix wins) goes
to that route's upstream with method, path, query, headers and body unchanged,
except for what a proxy must do (RFC 9110 §7.6): hop-by-hop headers
(Connection and the headers it names, Keep-Alive, Proxy-Connection, TE,
Transfer-Encoding, Upgrade, Trailer) are not forwarded in either direction,
``Expect: 100-continue`` is answered by the gateway, and X-Forwarded-For (the
peer appended), X-Forwarded-Proto and X-Request-Id (an incoming one is kept)
are added. Request and response bodies stream through in both directions; the
upstream's status, headers and body reach the client as they were sent (no
decompression, no redirect following). When the upstream is down the client
gets 502, when it stays silent for settings.gateway_upstream_timeout_seconds
504, and with no matching route 404, each with a JSON body saying why in words
and which route failed; the upstream's address (and what its socket said) is
only in the gateway's log line, never in a reply.

After the response has gone out, `on_finish` describes the exchange and the
shared `EventBuilder` turns it into one GatewayRequest, handed to the
publisher (a non-blocking put). The route table and the application are in app.py.
"""
from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import tornado.web
from tornado import httputil
from tornado.iostream import StreamClosedError

from .events import Exchange, request_id_from
from .upstream import UpstreamCall, UpstreamError

if TYPE_CHECKING:
    from .app import Gateway, Route

log = logging.getLogger("rtdash.gateway")

HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
                        "trailer"))
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE"))
BODY_CAPTURE_BYTES = 256 * 1024
DEFAULT_MAX_BODY_BYTES = 1 << 30
_DIGITS = re.compile(r"[0-9]+")


def body_length(headers: httputil.HTTPHeaders) -> int | None:
    """The request's Content-Length read as tornado reads it (equal repeats are one); None without one.

    ValueError for a value tornado refuses (it does so as it reads the body, after `prepare`).
    """
    value = headers.get("Content-Length")
    if value is None:
        return None
    pieces = re.split(r",[ \t]*", value)
    if any(piece != pieces[0] for piece in pieces) or not _DIGITS.fullmatch(pieces[0]):
        raise ValueError(f"bad Content-Length {value!r}")
    return int(pieces[0])


def hop_by_hop(headers: httputil.HTTPHeaders) -> set[str]:
    names = set(HOP_BY_HOP)
    for value in headers.get_list("Connection"):
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


@tornado.web.stream_request_body
class ProxyHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self, *, gateway: Gateway) -> None:
        self.gw = gateway
        self.t0 = time.perf_counter()
        self.started_at = datetime.now(timezone.utc)
        self.route: Route | None = None
        self.call: UpstreamCall | None = None
        self.request_id = ""
        self.request_bytes = 0
        self.body_length: int | None = None
        self.response_bytes = 0
        self.capture: bytearray | None = None
        self.capture_overflow = False
        self.upstream_headers_seen: httputil.HTTPHeaders | None = None
        self.broken: str | None = None
        self.client_gone = False

    def compute_etag(self) -> None:
        return None                         # never add an ETag (or turn a 200 into a 304) of our own

    async def prepare(self) -> None:
        self.request.connection.set_max_body_size(self.gw.max_body_bytes)
        self.request.connection.stream.set_nodelay(True)   # relay each piece as soon as it is written
        self.request_id = request_id_from(self.request.headers)
        self.route = self.gw.match(self.request.path)
        try:
            self.body_length = body_length(self.request.headers)
        except ValueError:
            self.route = None               # tornado answers 400 (one log line) as it reads the body
            return
        if self.route is None:
            return                          # 404 once the body (if any) has been read
        if self.gw.builder.needs_body(self.route.name, self.request.path):
            self.capture = bytearray()
        try:
            await self._start_call(retry=False)
        except UpstreamError as exc:
            self._upstream_failed(exc)

    async def _start_call(self, *, retry: bool) -> None:
        req = self.request
        headers = self._upstream_headers()
        chunked = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
        has_body = chunked or (self.body_length or 0) > 0
        self_chunked = chunked and req.method not in ("POST", "PUT", "PATCH")
        if self_chunked:
            headers["Transfer-Encoding"] = "chunked"
        # A reused connection may have been closed by the upstream meanwhile; only a request that
        # can be sent again (idempotent, no body) takes that chance.
        fresh = retry or has_body or req.method not in IDEMPOTENT
        self.call = UpstreamCall(self.gw.pool, self.route.upstream, self, timeout=self.gw.timeout)
        await self.call.start(req.method, req.uri, headers, fresh=fresh, self_chunked=self_chunked)

    def _upstream_headers(self) -> httputil.HTTPHeaders:
        req = self.request
        drop = hop_by_hop(req.headers) | {"expect"}
        out = httputil.HTTPHeaders()
        for name, value in req.headers.get_all():
            if name.lower() not in drop:
                out.add(name, value)
        peer = req.remote_ip or ""
        forwarded = ", ".join(req.headers.get_list("X-Forwarded-For"))
        if "X-Forwarded-For" in out:
            del out["X-Forwarded-For"]
        out["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
        if "X-Forwarded-Proto" not in out or not self.gw.builder.trusted.trusts(peer):
            out["X-Forwarded-Proto"] = req.protocol
        out["X-Request-Id"] = self.request_id
        if "Host" not in out:
            out["Host"] = self.route.upstream.netloc
        if self.body_length is not None:
            out["Content-Length"] = str(self.body_length)   # "5, 5" (a repeat) as one value
        elif "Transfer-Encoding" not in req.headers and req.method in ("POST", "PUT", "PATCH"):
            out["Content-Length"] = "0"     # no body at all: say so instead of chunking nothing
        return out

    def data_received(self, chunk: bytes):
        self.request_bytes += len(chunk)
        if self.call is not None:
            return self.call.write(chunk)
        return None

    async def _proxy(self, *_args) -> None:
        if self.route is None:
            routes = ", ".join(f"{r.prefix} -> {r.name}" for r in self.gw.routes) or "none"
            return self._reply_error(404, f"no gateway route for {self.request.path} (routes: {routes})")
        self.call.finish_request()
        try:
            await self.call.response()
        except UpstreamError as exc:
            if exc.retryable and self.call.head is None and not self._headers_written:
                log.info("upstream %s closed a kept-alive connection; sending %s %s again",
                         self.route.name, self.request.method, self.request.path)
                try:
                    await self._start_call(retry=True)
                    self.call.finish_request()
                    await self.call.response()
                except UpstreamError as again:
                    exc = again
                else:
                    exc = None
            if exc is not None:
                return self._upstream_failed(exc)
        if not self._finished:
            if not self._headers_written:
                await self._flush_to_client()   # an empty body: send the head exactly as received
            self.finish()

    get = head = post = delete = patch = put = options = _proxy

    def _upstream_failed(self, exc: UpstreamError) -> None:
        if self.client_gone:
            self.broken = "client closed the connection"
        elif not self._headers_written:
            log.warning("%s %s via %s: %d %s (%s)", self.request.method, self.request.path, self.route.name,
                        exc.status, exc.message, exc.detail)
            return self._reply_error(exc.status, exc.message)
        else:
            log.warning("%s %s via %s: response broken off: %s (%s)", self.request.method, self.request.path,
                        self.route.name, exc.message, exc.detail)
            self.broken = exc.message
        # Part of the response is out: the only honest signal left is to close the connection.
        self.request.connection.stream.close()
        if not self._finished:
            self.finish()

    def _reply_error(self, status: int, message: str) -> None:
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Request-Id", self.request_id)
        body: dict = {"error": message, "status": status, "request_id": self.request_id}
        if self.route is not None:
            body["route"] = self.route.name
        payload = json.dumps(body).encode()
        self.response_bytes = len(payload)
        self.finish(payload)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish({"error": self._reason, "status": status_code, "request_id": self.request_id})

    # --- ResponseSink: the upstream's response, relayed as it comes --------------------------

    def upstream_headers(self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders):
        self.upstream_headers_seen = headers
        for name in ("Server", "Content-Type", "Date"):
            self.clear_header(name)
        self.set_status(start_line.code, start_line.reason or httputil.responses.get(start_line.code, "Unknown"))
        drop = hop_by_hop(headers)
        for name, value in headers.get_all():
            if name.lower() not in drop:
                self.add_header(name, value)
        if self.request.method == "HEAD" or start_line.code in (204, 304):
            return self._flush_to_client()  # no body follows
        return None                         # the head goes out with the first piece of the body

    def upstream_data(self, chunk: bytes):
        self.response_bytes += len(chunk)
        if self.capture is not None and not self.capture_overflow:
            if len(self.capture) + len(chunk) <= self.gw.capture_bytes:
                self.capture += chunk
            else:
                self.capture_overflow = True   # a truncated body cannot be parsed: give extractors none
        if self.request.method == "HEAD":
            return None
        self.write(chunk)
        return self._flush_to_client()

    async def _flush_to_client(self) -> None:
        if self.client_gone:
            raise StreamClosedError()
        try:
            await self.flush()
        except StreamClosedError:
            self.client_gone = True
            raise

    def on_connection_close(self) -> None:
        self.client_gone = True
        if self.call is not None:
            self.call.abort("client closed the connection")
        super().on_connection_close()

    # --- the event ------------------------------------------------------------------------------

    def on_finish(self) -> None:
        req = self.request
        upstream_headers = self.upstream_headers_seen
        extras = {"error": self.broken} if self.broken else None
        body = None
        if self.capture is not None and not self.capture_overflow:
            body = bytes(self.capture)
        self.gw.publish(Exchange(
            request_id=self.request_id, started_at=self.started_at, method=req.method, path=req.path,
            query=req.query, route=self.route.name if self.route else "", status=self.get_status(),
            request_bytes=self.request_bytes, response_bytes=self.response_bytes, total_ms=(time.perf_counter() - self.t0) * 1000,
            upstream_ms=self.call.upstream_ms if self.call is not None else None,
            peer_ip=req.remote_ip or "", request_headers=req.headers, source="proxy",
            user_id=upstream_headers.get("X-User-Id") if upstream_headers is not None else None,
            response_body=body,
            content_encoding=upstream_headers.get("Content-Encoding") if upstream_headers is not None else None,
            extras=extras))
