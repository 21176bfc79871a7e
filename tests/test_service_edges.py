"""The gateway and the order service at their edge: malformed requests log one line each, and the
connection limit holds.

Runs the real processes (through the stack's own service definitions) with no Kafka at all: the
edge does not need it.
"""
from __future__ import annotations

import socket

import pytest

from rtdash.keys import demo_keys
from rtdash.settings import Settings
from stack.services import python_service
from stack.testing import free_port
from waiting import eventually

MALFORMED = [
    b"GARBAGE\r\n\r\n",                                         # no method, target and version
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",      # a header line without a colon
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",                     # an invalid Host
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",       # an invalid Content-Length
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",  # two of them
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",                              # not HTTP/1.x
]


@pytest.fixture(params=["gateway", "order_service"])
def edge(request, tmp_path):
    """(service, port) of a running gateway or order service that holds at most 3 connections."""
    settings = Settings(_env_file=None, home=tmp_path, gateway_port=free_port(), kafka_port=free_port(),
                        order_service_port=free_port(), order_service_internal_port=free_port(),
                        gateway_routes=f"shop=/=http://127.0.0.1:{free_port()}", visitor_secret="s",
                        max_connections=3)
    if request.param == "gateway":
        service = python_service(settings, "gateway", "producers.gateway", settings.gateway_port,
                                 health_path="/_gateway/healthz")
        port = settings.gateway_port
    else:
        demo_keys(settings)
        service = python_service(settings, "order_service", "producers.order_service",
                                 settings.order_service_port)
        port = settings.order_service_port
    with service:
        yield service, port


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while piece := sock.recv(4096):
            reply += piece
        return reply


def test_each_malformed_request_is_answered_400_and_logged_in_one_line(edge):
    service, port = edge
    for data in MALFORMED:
        assert exchange(port, data).startswith(b"HTTP/1.1 400 "), data

    def said() -> list[str]:
        return service.log_path.read_text().splitlines()

    eventually(lambda: sum("Malformed HTTP message" in line for line in said()) >= len(MALFORMED),
               what="a line per malformed request")
    assert sum("Malformed HTTP message" in line for line in said()) == len(MALFORMED), said()
    assert not [line for line in said() if "Traceback" in line or "ERROR" in line], said()


def test_connections_beyond_the_limit_are_refused(edge):
    service, port = edge
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        eventually(lambda: exchange(port, b"").startswith(b"HTTP/1.1 503 "), what="the fourth connection refused")
    finally:
        for sock in held:
            sock.close()
    eventually(lambda: service.health(), what="served again once the held connections closed")
