"""Health probes of the local stack's services: is the port taken, does it answer."""
from __future__ import annotations

import socket
import urllib.request


def port_open(host: str, port: int) -> bool:
    """Something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    """GET `url` answers 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def redis_ready(url: str) -> bool:
    """Redis at `url` answers PING."""
    import redis
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
