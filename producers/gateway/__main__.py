"""Run the gateway: ``python -m producers.gateway``.

Listens on RTDASH_BIND_HOST:RTDASH_GATEWAY_PORT (8000) and proxies by the
route table RTDASH_GATEWAY_ROUTES (default: /order_center/ to the order
service, everything else to the demo shop). Events go to the Kafka topic
RTDASH_GATEWAY_TOPIC (created when missing) through a librdkafka producer whose
queue holds RTDASH_GATEWAY_QUEUE_SIZE events and RTDASH_GATEWAY_QUEUE_BYTES bytes.
Health: GET /_gateway/healthz.
Stops cleanly on SIGTERM/SIGINT: stop accepting, finish open requests, publish
what is queued (if Kafka takes it within a few seconds).
"""
from __future__ import annotations

import asyncio
import logging
import sys

from rtdash.logs import setup_logging
from rtdash.service import listen, until_stopped
from rtdash.settings import Settings
from rtdash.kafka_admin import ensure_topics

from .app import HEALTH_PATH, make_app
from .proxy import DEFAULT_MAX_BODY_BYTES
from .publisher import KafkaPublisher

log = logging.getLogger("rtdash.gateway")


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    publisher = KafkaPublisher(bootstrap_servers=settings.kafka_servers, topic=settings.gateway_topic,
                               queue_size=settings.gateway_queue_size, queue_bytes=settings.gateway_queue_bytes,
                               prepare=lambda: ensure_topics(settings, [settings.gateway_topic]))
    publisher.start()
    app = make_app(settings, publisher=publisher)
    server = listen(app, settings, settings.gateway_port, xheaders=False, max_body_size=DEFAULT_MAX_BODY_BYTES,
                    decompress_request=False)
    for route in app.gateway.routes:
        log.info("route %s: %s -> %s", route.name, route.prefix, route.upstream.url)
    log.info("gateway listening on http://%s:%d (health %s, topic %s)", settings.bind_host,
             settings.gateway_port, HEALTH_PATH, settings.gateway_topic)
    await until_stopped()
    log.info("gateway stopping")
    server.stop()
    await server.close_all_connections()
    app.gateway.pool.close()
    await asyncio.get_running_loop().run_in_executor(None, publisher.stop, 5.0)
    log.info("gateway stopped (%s)", publisher.health())


if __name__ == "__main__":
    setup_logging()
    # The publisher's poll thread runs its delivery callbacks under the GIL: hand the GIL back to
    # the loop within 0.5 ms instead of the default 5 ms, so requests never queue behind them.
    sys.setswitchinterval(0.0005)
    # kafka-python (creating the topic) logs every failed connection at ERROR; the publisher logs
    # each outage once itself.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    asyncio.run(main())
