"""Kafka topic administration: which topics rtdash uses, creating the missing ones, broker readiness.

The broker itself is not configured here (the local stack's `stack.kafka` does that);
this is what every process that talks to Kafka may need at its start: the gateway
creates its topic when missing, the local stack creates them all once the broker is up.
"""
from __future__ import annotations

import socket
from collections.abc import Iterable

from .settings import Settings


def pipeline_topics(settings: Settings) -> list[str]:
    """The topics the local stack creates at start (docker-compose.yml's kafka-init creates the same)."""
    return [settings.orders_topic, settings.orders_dlq_topic, settings.gateway_topic, settings.gateway_dlq_topic,
            settings.alerts_topic]


def ensure_topics(settings: Settings, topics: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet (by default `pipeline_topics`); returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(topics or pipeline_topics(settings))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="rtdash-topics")
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        created = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, settings.orders_topic_partitions, 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def kafka_ready(bootstrap: str) -> bool:
    """The broker answers metadata requests (not just an open port)."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    if not _accepts_connections(host, int(port)):
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                 client_id="rtdash-health")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _accepts_connections(host: str, port: int) -> bool:
    """Checked first: the admin client waits 30 s before it gives up bootstrapping from a closed port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
