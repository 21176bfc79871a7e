"""Gateway fixtures: a real upstream Tornado app and gateways on free ports, in one loop thread.

The servers run on an asyncio loop in a background thread so the tests can use
plain blocking clients (http.client, raw sockets) and see exactly what goes
over the wire. `make_gateway(**settings)` builds a gateway with an in-memory
publisher (or any publisher given) in front of the upstream.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.web

from producers.gateway.app import make_app
from producers.gateway.publisher import MemoryPublisher
from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually

BIG = 5 * 1024 * 1024


class LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 30):
        async def wrapper():
            return fn()
        return self.run(wrapper(), timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# --- the upstream -------------------------------------------------------------------------

@tornado.web.stream_request_body
class EchoHandler(tornado.web.RequestHandler):
    """Any method: replies with what it received (method, uri, headers, body length and hash)."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def prepare(self):
        self.request.connection.set_max_body_size(64 * 1024 * 1024)
        self.hash = hashlib.sha256()
        self.size = 0

    def data_received(self, chunk):
        self.hash.update(chunk)
        self.size += len(chunk)

    def _echo(self, *_):
        status = int(self.get_query_argument("status", "200"))
        self.set_status(status)
        self.set_header("X-Echo", "1")
        if status in (204, 304):
            return self.finish()
        self.finish({"method": self.request.method, "uri": self.request.uri,
                     "headers": [[k, v] for k, v in self.request.headers.get_all()],
                     "body_size": self.size, "body_sha256": self.hash.hexdigest()})

    get = head = post = delete = patch = put = options = _echo


class StatusHandler(tornado.web.RequestHandler):
    def get(self, code):
        code = int(code)
        self.set_status(code)
        self.set_header("Content-Type", "text/x-test")
        self.set_header("ETag", '"v1"')
        if code in (204, 304):
            return self.finish()
        self.finish(f"status {code}\n")

    post = get


class CookiesHandler(tornado.web.RequestHandler):
    def get(self):
        self.add_header("Set-Cookie", "a=1; Path=/; HttpOnly")
        self.add_header("Set-Cookie", "b=2; Path=/")
        self.add_header("X-Multi", "one")
        self.add_header("X-Multi", "two")
        self.set_header("Server", "UpstreamServer/1.0")
        self.finish("cookies")


class BinaryHandler(tornado.web.RequestHandler):
    def get(self):
        size = int(self.get_query_argument("size", "65536"))
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(binary_body(size))


class ChunkedHandler(tornado.web.RequestHandler):
    async def get(self):
        for i in range(5):
            self.write(f"part {i}\n".encode() * 1000)
            await self.flush()
            await asyncio.sleep(0.01)
        self.finish()


class GzipHandler(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Content-Type", "application/json")
        self.finish(GZIPPED)


class SlowHandler(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(float(self.get_query_argument("s", "2")))
        self.finish("late")


class SearchHandler(tornado.web.RequestHandler):
    def get(self):
        if self.request.headers.get("Authorization"):
            self.set_header("X-User-Id", "user0042")
        q = self.get_query_argument("q", "")
        shape = self.get_query_argument("shape", "shop")
        products = [{"id": f"P0000{i}", "name": f"{q} {i}"} for i in range(1, 4)]
        if shape == "shop":
            doc = {"query": q, "total": 3, "product_ids": [p["id"] for p in products], "products": products}
        elif shape == "results":
            doc = {"meta": {"q": q}, "results": products}
        elif shape == "nested":
            doc = {"data": {"items": products}}
        else:
            doc = {"message": "no list here"}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(doc))


class ProductHandler(tornado.web.RequestHandler):
    def get(self, product_id):
        if product_id == "P99999":
            self.set_status(404)
            return self.finish({"error": "unknown product"})
        self.finish({"id": product_id, "name": "Rustic Cast Iron Skillet"})


def binary_body(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


GZIPPED = gzip.compress(json.dumps({"results": [{"id": "P00007"}]}).encode(), mtime=0)


def upstream_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/echo.*", EchoHandler), (r"/order_center/.*", EchoHandler), (r"/status/(\d+)", StatusHandler),
        (r"/cookies", CookiesHandler), (r"/binary", BinaryHandler), (r"/chunked", ChunkedHandler),
        (r"/gzip", GzipHandler), (r"/slow", SlowHandler), (r"/search/?", SearchHandler),
        (r"/products/([^/]+)", ProductHandler),
    ])


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def upstream(loop_thread):
    """Base URL of the upstream test app."""
    port = free_port()

    async def start():
        return upstream_app().listen(port, address="127.0.0.1", max_body_size=64 * 1024 * 1024)

    server = loop_thread.run(start())
    yield f"http://127.0.0.1:{port}"

    async def stop():
        server.stop()
        await server.close_all_connections()

    loop_thread.run(stop())


@dataclass
class GatewayHandle:
    port: int
    app: Any
    publisher: Any
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self, count: int = 1, timeout: float = 5.0) -> list:
        """The first `count` events (waits: they are published just after the response went out)."""
        return eventually(lambda: len(self.publisher.events) >= count and self.publisher.events[:count],
                          timeout=timeout, interval=0.01, what=f"{count} published events")

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                **kwargs) -> tuple[http.client.HTTPResponse, bytes]:
        return http_call(self.port, method, path, body, headers, **kwargs)


def http_call(port: int, method: str, path: str, body: Any = None, headers: dict | None = None,
              **kwargs) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kwargs)
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


@pytest.fixture
def make_gateway(loop_thread, upstream, tmp_path):
    started: list[tuple[Any, Any]] = []

    def factory(routes: list[tuple[str, str, str]] | None = None, publisher: Any = None,
                **overrides) -> GatewayHandle:
        values = dict(home=tmp_path / "home", visitor_secret="test-secret", gateway_upstream_timeout_seconds=1.0,
                      timezone="UTC")
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        table = routes if routes is not None else [
            ("shop", "/", upstream), ("order_center", "/order_center/", upstream),
            ("down", "/down/", f"http://127.0.0.1:{free_port()}")]
        pub = publisher if publisher is not None else MemoryPublisher()
        port = free_port()

        async def start():
            app = make_app(settings, publisher=pub, routes=table)
            return app, app.listen(port, address="127.0.0.1", max_body_size=1 << 30)

        app, server = loop_thread.run(start())
        started.append((app, server))
        return GatewayHandle(port, app, pub, settings)

    yield factory

    async def stop():
        for app, server in started:
            server.stop()
            await server.close_all_connections()
            app.gateway.pool.close()

    loop_thread.run(stop())


@pytest.fixture(scope="session")
def support():
    """This module's helpers (binary_body, http_call, BIG, GZIPPED) for the test modules.

    Handed over by reference: several conftest modules share the name `conftest`, so looking
    this one up by name would find whichever was imported last.
    """
    import types
    return types.SimpleNamespace(binary_body=binary_body, http_call=http_call, free_port=free_port, BIG=BIG,
                                 GZIPPED=GZIPPED)
