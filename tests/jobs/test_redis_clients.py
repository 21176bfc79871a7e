"""The jobs' Redis clients never wait forever: connect and command timeouts and keepalive, from one place."""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest
import redis

from rtdash.redis_client import KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES
from rtdash.redis_client import redis_client as bounded_client
from rtdash.settings import Settings

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def test_a_client_carries_the_settings_timeouts_and_keepalive(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, redis_port=6390, redis_connect_timeout_seconds=2.5,
                        redis_socket_timeout_seconds=7)
    kwargs = bounded_client(settings).connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (6390, 2.5, 7)
    assert kwargs["socket_keepalive"] is True
    assert kwargs["socket_keepalive_options"] == {socket.TCP_KEEPIDLE: KEEPALIVE_IDLE_S,
                                                  socket.TCP_KEEPINTVL: KEEPALIVE_INTERVAL_S,
                                                  socket.TCP_KEEPCNT: KEEPALIVE_PROBES}
    assert bounded_client(settings, socket_timeout=2).connection_pool.connection_kwargs["socket_timeout"] == 2


def test_a_connection_to_a_real_redis_has_keepalive_and_the_command_timeout(job_settings):
    client = bounded_client(job_settings.model_copy(update={"redis_socket_timeout_seconds": 7.0}))
    try:
        assert client.ping() is True
        connection = client.connection_pool.get_connection()
        try:
            sock = connection._sock
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
            assert sock.gettimeout() == 7.0
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


@pytest.fixture
def silent_server():
    """A port that accepts TCP connections (the kernel's backlog) and never answers: a stalled Redis."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_a_command_to_a_redis_that_never_answers_fails_after_the_socket_timeout(silent_server, tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, redis_port=silent_server, redis_socket_timeout_seconds=0.5)
    client = bounded_client(settings)
    began = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert time.monotonic() - began < 5
    client.close()


def test_every_redis_client_of_the_jobs_comes_from_the_one_helper():
    """Clients built elsewhere would miss the timeouts: no job module builds its own."""
    direct = re.compile(r"\bRedis\s*\(|StrictRedis|from_url\s*\(|redis\.asyncio")
    offenders = [f"{path.name}:{n}" for path in sorted(JOBS.glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if direct.search(line)]
    assert offenders == []
    assert any("redis_client(settings" in path.read_text() for path in JOBS.glob("*.py"))
