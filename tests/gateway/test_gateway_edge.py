"""The gateway process at its edge: malformed requests log one line each, and its connection limit holds.

Runs the real ``python -m producers.gateway`` (through the stack's own service definition) with
no Kafka at all: the edge does not need it.
"""
from __future__ import annotations

import socket

import pytest

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


@pytest.fixture
def gateway(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, gateway_port=free_port(), kafka_port=free_port(),
                        gateway_routes=f"shop=/=http://127.0.0.1:{free_port()}", visitor_secret="s",
                        max_connections=3, log_max_bytes=1 << 20)
    with python_service(settings, "gateway", "producers.gateway", settings.gateway_port,
                        health_path="/_gateway/healthz") as service:
        yield service, settings


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while piece := sock.recv(4096):
            reply += piece
        return reply


def test_each_malformed_request_is_answered_400_and_logged_in_one_line(gateway):
    service, settings = gateway
    for data in MALFORMED:
        assert exchange(settings.gateway_port, data).startswith(b"HTTP/1.1 400 "), data
    def said() -> list[str]:
        return service.log_path.read_text().splitlines()

    eventually(lambda: sum("Malformed HTTP message" in line for line in said()) >= len(MALFORMED),
               what="a line per malformed request")
    assert sum("Malformed HTTP message" in line for line in said()) == len(MALFORMED), said()
    assert not [line for line in said() if "Traceback" in line or "ERROR" in line], said()


def test_the_gateway_refuses_connections_beyond_its_limit(gateway):
    service, settings = gateway
    held = [socket.create_connection(("127.0.0.1", settings.gateway_port), timeout=10) for _ in range(3)]
    try:
        eventually(lambda: exchange(settings.gateway_port, b"").startswith(b"HTTP/1.1 503 "),
                   what="the fourth connection refused")
    finally:
        for sock in held:
            sock.close()
    health = exchange(settings.gateway_port, b"GET /_gateway/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200 ")
