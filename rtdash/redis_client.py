"""Redis clients that never wait forever: connect and command timeouts and TCP keepalive, from the settings.

Without them a Redis that stops answering (a stalled server, a connection dropped where
neither end hears of it) blocks its caller for good: for the jobs, a micro-batch writing
its figures, and so the whole query, silently. With them a command fails after
RTDASH_REDIS_SOCKET_TIMEOUT_SECONDS and the caller's own recovery takes over (the jobs'
supervisor restarts the query from its checkpoint); keepalive probes find a dead idle
connection, and a connection idle for HEALTH_CHECK_S is pinged before it is used again.
"""
from __future__ import annotations

import socket

import redis

from rtdash.settings import Settings

# TCP keepalive: the first probe after this many idle seconds, then one every KEEPALIVE_INTERVAL_S;
# the connection is given up after KEEPALIVE_PROBES unanswered probes.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 3
# A connection idle this long is checked with a PING before its next command.
HEALTH_CHECK_S = 30


def keepalive_options() -> dict[int, int]:
    """The keepalive socket options this platform has (Linux has all three)."""
    wanted = (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
              ("TCP_KEEPCNT", KEEPALIVE_PROBES))
    return {getattr(socket, name): value for name, value in wanted if hasattr(socket, name)}


def redis_client(settings: Settings, *, socket_timeout: float | None = None) -> redis.Redis:
    """A client of the settings' Redis with every bound set; `socket_timeout` overrides the setting's
    (a health probe wants an answer sooner than a micro-batch's write)."""
    return redis.Redis.from_url(
        settings.redis,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds if socket_timeout is None else socket_timeout,
        socket_keepalive=True,
        socket_keepalive_options=keepalive_options(),
        health_check_interval=HEALTH_CHECK_S,
    )
