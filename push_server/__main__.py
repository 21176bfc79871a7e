"""Run the push server: ``python -m push_server``.

Serves the dashboard at / and the WebSocket at /ws on
RTDASH_BIND_HOST:RTDASH_PUSH_PORT, fed from Redis (RTDASH_REDIS_URL).
SIGTERM/SIGINT: stop accepting, close every session, stop the Redis task.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from rtdash.logs import setup_logging
from rtdash.settings import Settings

from .app import make_app
from .broker_redis import RedisBroker
from .hub import Hub

log = logging.getLogger("rtdash.push")


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    hub = Hub()
    broker = RedisBroker(hub, settings.redis, settings.redis_prefix)
    await broker.start()
    app = make_app(settings, hub=hub, broker=broker)
    server = app.listen(settings.push_port, address=settings.bind_host)
    log.info("push server on http://%s:%d/ (WebSocket /ws, origins %s)", settings.bind_host,
             settings.push_port, ", ".join(settings.origins))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("push server stopping")
    server.stop()
    hub.close_all(1001, "server going away")
    await broker.stop()
    await server.close_all_connections()
    log.info("push server stopped")


if __name__ == "__main__":
    setup_logging()
    asyncio.run(main())
