"""rtdash.service.listen: a connection limit, idle and body timeouts, on a real server over real sockets."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import tornado.web

from rtdash.service import LimitedHTTPServer, listen
from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.finish("hello")

    def post(self):
        self.application.settings["posts"].append(len(self.request.body))
        self.finish("posted")


class Served:
    """A tornado app behind `listen`, on a loop in a thread, so the test can use blocking sockets."""

    def __init__(self, **limits):
        self.settings = Settings(_env_file=None, **limits)
        self.port = free_port()
        self.posts: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> LimitedHTTPServer:
            app = tornado.web.Application([(r"/", Hello)], posts=self.posts)
            return listen(app, self.settings, self.port, address="127.0.0.1")

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def close(self) -> None:
        async def stop():
            self.server.stop()
            await self.server.close_all_connections()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served():
    started: list[Served] = []

    def serve(**limits) -> Served:
        started.append(Served(**limits))
        return started[-1]

    yield serve
    for one in started:
        one.close()


def get(sock: socket.socket) -> bytes:
    """One keep-alive GET / on `sock`; the whole response."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while not reply.endswith(b"hello"):
        piece = sock.recv(4096)
        if not piece:
            break
        reply += piece
    return reply


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(4096):
        data += piece
    return data


def test_one_connection_beyond_the_limit_is_refused_while_the_others_are_open(served):
    svc = served(max_connections=3)
    held = [svc.connect() for _ in range(3)]
    eventually(lambda: svc.server.open_connections == 3, what="3 connections accepted")
    extra = svc.connect()
    refusal = read_until_closed(extra)            # answered and closed at once
    assert refusal.startswith(b"HTTP/1.1 503 ") and refusal.endswith(b'{"error": "too many connections"}')
    assert svc.server.refused == 1
    assert all(get(sock).startswith(b"HTTP/1.1 200 ") for sock in held)   # the held ones are served
    held.pop().close()
    eventually(lambda: svc.server.open_connections == 2, what="the closed connection let go")
    again = svc.connect()
    assert get(again).startswith(b"HTTP/1.1 200 ")
    for sock in [*held, again, extra]:
        sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(served):
    svc = served(idle_timeout_seconds=0.5)
    sock = svc.connect()
    assert get(sock).startswith(b"HTTP/1.1 200 ")     # kept alive: HTTP/1.1 without Connection: close
    t0 = time.monotonic()
    assert read_until_closed(sock) == b""              # then nothing is sent: the server hangs up
    waited = time.monotonic() - t0
    assert 0.4 < waited < 5, waited
    silent = svc.connect()                             # a connection that never sends a request
    t0 = time.monotonic()
    assert read_until_closed(silent) == b""
    assert 0.4 < time.monotonic() - t0 < 5
    eventually(lambda: svc.server.open_connections == 0, what="both connections let go")


def test_a_client_that_stalls_its_body_is_cut_off(served):
    svc = served(body_timeout_seconds=0.5, idle_timeout_seconds=30)
    sock = svc.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    t0 = time.monotonic()
    assert read_until_closed(sock) == b""              # no reply: the request never completed
    assert 0.4 < time.monotonic() - t0 < 5
    assert svc.posts == []
    whole = svc.connect()                              # a body sent in time is served
    whole.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" + b"a" * 100)
    assert read_until_closed(whole).startswith(b"HTTP/1.1 200 ")
    assert svc.posts == [100]


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="max_connections"):
        LimitedHTTPServer(tornado.web.Application([]), max_connections=0)
    with pytest.raises(ValueError, match="max_connections"):
        Settings(_env_file=None, max_connections=0)
