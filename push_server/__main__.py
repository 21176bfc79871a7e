"""Run the push server: ``python -m push_server``.

Serves the dashboard at / and the WebSocket at /ws on
RTDASH_BIND_HOST:RTDASH_PUSH_PORT, fed from Redis (RTDASH_REDIS_URL, key
prefix RTDASH_REDIS_PREFIX). WebSocket pages are accepted from
RTDASH_ALLOWED_ORIGINS only (default: this server's own address), requests
naming a host of RTDASH_ALLOWED_HOSTS only, WebSockets with a token only
(tokens.py; its secret RTDASH_PUSH_TOKEN_SECRET, else generated under
<home>/keys on first start).
SIGTERM/SIGINT: stop accepting, close every session, stop the Redis task.
"""
from __future__ import annotations

import asyncio
import gc
import logging

import uvloop

from rtdash.logs import setup_logging
from rtdash.service import listen, until_stopped
from rtdash.settings import Settings

from .app import make_app
from .broker_redis import RedisBroker
from .hub import Hub
from .session import Session

log = logging.getLogger("rtdash.push")

# A young-generation collection every 100,000 allocations instead of 700: each one promotes the objects of
# writes still in flight, and with thousands of clients those promotions set off full collections over
# every connection's objects many times a second (BENCHMARKS.md, fan-out). Memory still bounded: cycles
# are collected, only less often.
GC_THRESHOLDS = (100_000, 20, 10)


async def main(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or until `stop` is set), then shut down cleanly."""
    settings = settings or Settings()
    stop = stop or asyncio.Event()
    Session.stall_seconds = settings.push_stall_seconds
    hub = Hub(history_size=settings.push_history_size, history_seconds=settings.push_history_seconds)
    broker = RedisBroker(hub, settings.redis, settings.redis_prefix)
    app = make_app(settings, hub, broker)
    server = listen(app, settings, settings.push_port)
    await broker.start()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.info("push server on http://%s:%d/ (WebSocket /ws, origins %s, redis %s)", settings.bind_host,
             settings.push_port, ", ".join(settings.origins), settings.redis)
    try:
        await until_stopped(stop)
    finally:
        log.info("push server stopping (%d clients)", hub.clients)
        server.stop()
        sessions = hub.sessions()
        hub.close_all(1001, "server going away")
        await broker.stop()
        await asyncio.gather(*(session.wait_closed() for session in sessions))
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        except asyncio.TimeoutError:
            log.warning("some connections did not close in time")
        log.info("push server stopped")


if __name__ == "__main__":
    setup_logging()
    uvloop.run(main())
