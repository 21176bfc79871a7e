"""The gateway's HTTP/1.1 client to its upstreams: keep-alive pool, streaming both ways.

Built on tornado's own HTTP/1.1 connection (the one simple_httpclient uses
inside) rather than AsyncHTTPClient, because a proxy needs what that client
does not give: connections kept alive between requests (simple_httpclient
sends ``Connection: close`` on every request), no headers of its own
(it adds User-Agent, and Content-Type to a POST without one), and flow control
on the response stream (its streaming_callback cannot push back on a slow
client). Bodies are never decompressed.

An `UpstreamCall` writes the request head at once, the body as the client
sends it (`write`, `finish_request`), and reads the response concurrently,
handing the head and each body chunk to a `ResponseSink` whose returned
awaitables pause reading (backpressure from the client). "Upstream slow" is a
silence of `timeout` seconds while the gateway waits for the upstream (after
the request was sent, between response chunks).
"""
from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable
from typing import Protocol
from urllib.parse import urlsplit

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient


class UpstreamError(Exception):
    """The upstream could not answer; `status` is what the gateway replies (502 or 504).

    `message` says why in words and goes to the client, so it never names the upstream's
    address; `detail` (the upstream's URL, what the socket or parser said) is for the log.
    """

    def __init__(self, status: int, message: str, *, detail: str = "", retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.retryable = retryable     # nothing was received on a reused connection


class ResponseSink(Protocol):
    def upstream_headers(self, start_line: httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None: ...

    def upstream_data(self, chunk: bytes) -> Awaitable[None] | None: ...


class Upstream:
    """One upstream base URL (``http://host:port[/base]``)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad upstream URL {url!r}: use http://host:port")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.netloc = parts.netloc
        self.key = (self.scheme, self.host, self.port)


class UpstreamPool:
    """Idle keep-alive connections per upstream; a closed idle connection leaves the pool by itself."""

    def __init__(self, *, max_idle_per_upstream: int = 64, connect_timeout: float = 5.0,
                 max_body_size: int = 1 << 40):
        self.max_idle = max_idle_per_upstream
        self.connect_timeout = connect_timeout
        self.params = HTTP1ConnectionParameters(decompress=False, max_body_size=max_body_size,
                                                chunk_size=64 * 1024)
        self._idle: dict[tuple[str, str, int], list[IOStream]] = {}
        self._tcp = TCPClient()
        self._ssl: ssl.SSLContext | None = None

    async def acquire(self, upstream: Upstream, *, fresh: bool = False) -> tuple[IOStream, bool]:
        """(stream, reused): an idle connection unless `fresh`, else a new one."""
        idle = self._idle.get(upstream.key)
        while idle and not fresh:
            stream = idle.pop()
            stream.set_close_callback(None)
            if not stream.closed():
                stream.set_nodelay(True)
                return stream, True
        ssl_options = None
        if upstream.scheme == "https":
            self._ssl = self._ssl or ssl.create_default_context()
            ssl_options = self._ssl
        try:
            stream = await self._tcp.connect(upstream.host, upstream.port, ssl_options=ssl_options,
                                             max_buffer_size=self.params.chunk_size * 4 + (1 << 20),
                                             timeout=self.connect_timeout)
        except TimeoutError:
            raise UpstreamError(504, f"no connection to the upstream within {self.connect_timeout:g}s",
                                detail=upstream.url) from None
        except (OSError, StreamClosedError) as exc:
            cause = exc.real_error if isinstance(exc, StreamClosedError) and exc.real_error else exc
            why = cause.strerror if isinstance(cause, OSError) and cause.strerror else "the connection failed"
            raise UpstreamError(502, f"the upstream is unavailable ({why.lower()})",
                                detail=f"{upstream.url}: {cause}") from None
        stream.set_nodelay(True)
        return stream, False

    def release(self, upstream: Upstream, stream: IOStream) -> None:
        idle = self._idle.setdefault(upstream.key, [])
        if stream.closed() or len(idle) >= self.max_idle:
            stream.close()
            return
        stream.set_close_callback(lambda: idle.remove(stream) if stream in idle else None)
        idle.append(stream)

    def close(self) -> None:
        for idle in self._idle.values():
            for stream in list(idle):
                stream.close()
        self._idle.clear()
        self._tcp.close()


class UpstreamCall(httputil.HTTPMessageDelegate):
    """One request/response with an upstream; see the module docstring."""

    def __init__(self, pool: UpstreamPool, upstream: Upstream, sink: ResponseSink, *, timeout: float):
        self.pool = pool
        self.upstream = upstream
        self.sink = sink
        self.timeout = timeout
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.head: httputil.ResponseStartLine | None = None
        self.headers: httputil.HTTPHeaders | None = None
        self._loop = IOLoop.current()
        self._conn: HTTP1Connection | None = None
        self._stream: IOStream | None = None
        self._reused = False
        self._self_chunked = False
        self._complete = False
        self._error: UpstreamError | None = None
        self._reader: asyncio.Future | None = None
        self._timer: object | None = None
        self._last_activity = 0.0
        self._write_failed = False
        self._paused = 0

    @property
    def upstream_ms(self) -> float:
        return ((self.ended or time.perf_counter()) - self.started) * 1000

    async def start(self, method: str, uri: str, headers: httputil.HTTPHeaders, *, fresh: bool,
                    self_chunked: bool = False) -> None:
        """Connect (or reuse) and send the request head; the response is read from now on."""
        self._stream, self._reused = await self.pool.acquire(self.upstream, fresh=fresh)
        self._conn = HTTP1Connection(self._stream, True, self.pool.params)
        self._self_chunked = self_chunked
        self._conn.write_headers(httputil.RequestStartLine(method, self.upstream.base_path + uri, "HTTP/1.1"),
                                 headers)
        self._reader = asyncio.ensure_future(self._read())

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Send a piece of the request body; the returned awaitable completes when it is written."""
        if self._write_failed or self._conn is None or not chunk:
            return None
        if self._self_chunked:
            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        return self._guarded(self._conn.write(chunk))

    async def _guarded(self, future: Awaitable[None]) -> None:
        try:
            await future
        except StreamClosedError:
            self._write_failed = True      # the upstream stopped reading; its reply (if any) still counts

    def finish_request(self) -> None:
        """The request body is complete: end it and start the "upstream slow" clock."""
        if self._conn is None:
            return
        if not self._write_failed:
            try:
                if self._self_chunked:
                    self._conn.write(b"0\r\n\r\n")
                self._conn.finish()
            except (StreamClosedError, httputil.HTTPOutputError):
                self._write_failed = True
        self._touch()
        self._arm()

    async def response(self) -> None:
        """Wait for the whole response; raises UpstreamError when there was none or it broke off."""
        assert self._reader is not None
        await self._reader
        self._disarm()
        self.ended = time.perf_counter()
        if self._error is not None:
            raise self._error
        if not self._complete:
            if self.head is None:
                raise UpstreamError(502, "the upstream closed the connection without a response",
                                    detail=self.upstream.url, retryable=self._reused)
            raise UpstreamError(502, "the upstream closed the connection in the middle of the response",
                                detail=self.upstream.url)
        if self._reusable():
            self.pool.release(self.upstream, self._stream)
        elif self._stream is not None:
            self._stream.close()

    def abort(self, reason: str) -> None:
        """Give up (client gone): close the upstream connection, never reuse it."""
        if self._error is None:
            self._error = UpstreamError(502, reason)
        if self._stream is not None:
            self._stream.close()

    # --- reading the response (HTTPMessageDelegate) ---------------------------------------------

    async def _read(self) -> None:
        try:
            await self._conn.read_response(self)
        except (StreamClosedError, httputil.HTTPInputError, OSError) as exc:
            if self._error is None and not self._complete:
                self._error_from(exc)
        except Exception as exc:  # noqa: BLE001 - a sink failure (client gone): the call is over
            if self._error is None:
                self._error = UpstreamError(502, "relaying the response failed",
                                            detail=f"{self.upstream.url}: {type(exc).__name__}: {exc}")
            if self._stream is not None:
                self._stream.close()

    def _error_from(self, exc: Exception) -> None:
        if isinstance(exc, httputil.HTTPInputError):
            self._error = UpstreamError(502, "the upstream sent a malformed response",
                                        detail=f"{self.upstream.url}: {exc}")

    def headers_received(self, start_line, headers):
        if start_line.code < 200:          # 1xx: the final head follows
            return None
        self.head, self.headers = start_line, headers
        self._touch()
        return self._paced(self.sink.upstream_headers(start_line, headers))

    def data_received(self, chunk: bytes):
        self._touch()
        return self._paced(self.sink.upstream_data(chunk))

    def _paced(self, waiting: Awaitable[None] | None) -> Awaitable[None] | None:
        # While the client drains what was relayed, the upstream is not the slow one.
        if waiting is None:
            return None
        self._paused += 1
        return self._resume_after(waiting)

    async def _resume_after(self, waiting: Awaitable[None]) -> None:
        try:
            await waiting
        finally:
            self._paused -= 1
            self._touch()

    def finish(self) -> None:
        self._complete = True

    def on_connection_close(self) -> None:
        pass                                # _read notices: no `finish` means no complete response

    def _reusable(self) -> bool:
        if self._stream is None or self._stream.closed() or self._write_failed or self.head is None:
            return False
        headers = self.headers
        if self.head.version != "HTTP/1.1" or "close" in headers.get("Connection", "").lower():
            return False
        return True                        # a body read until close has closed the stream already

    # --- the "upstream slow" clock ----------------------------------------------------------------

    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def _arm(self) -> None:
        if self._timer is None and not self._complete and self._error is None:
            self._timer = self._loop.call_at(self._last_activity + self.timeout, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._loop.remove_timeout(self._timer)
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._complete or self._error is not None:
            return
        if self._paused:
            self._touch()
        if self._loop.time() - self._last_activity < self.timeout:
            self._arm()                    # there was progress: wait for the rest of the silence
            return
        what = "did not answer" if self.head is None else "stopped sending its response"
        self._error = UpstreamError(504, f"the upstream {what} within {self.timeout:g}s", detail=self.upstream.url)
        if self._stream is not None:
            self._stream.close()
