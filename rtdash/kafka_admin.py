"""Kafka topic administration: which topics rtdash uses, creating the missing ones, broker readiness.

The broker itself is not configured here (the local stack's `stack.kafka` does that);
this is what every process that talks to Kafka may need at its start: the gateway
creates its topic when missing, the local stack creates them all once the broker is up.

Each topic gets the partitions its setting names (`topic_partitions`); a topic that
exists with fewer gets partitions added, one with more is left alone. Adding partitions
moves keys to other partitions from then on: neither job needs a key's records in one
partition (the orders job drops duplicate order ids across all partitions, the traffic
job merges every batch's figures whatever partition they came from).
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from .settings import Settings

log = logging.getLogger("rtdash.kafka")


def pipeline_topics(settings: Settings) -> list[str]:
    """The topics the local stack creates at start (docker-compose.yml's kafka-init creates the same).

    The real-time orders path's rows topic is among them in either orders mode: the orders applier gets
    its partitions at its start, before the real-time query has made its first row; a switch of mode on
    kept state needs no topic step; in `microbatch` it is one empty topic nobody reads or writes."""
    return [settings.orders_topic, settings.orders_dlq_topic, settings.gateway_topic, settings.gateway_dlq_topic,
            settings.alerts_topic, settings.orders_realtime_topic]


def topic_partitions(settings: Settings, topic: str) -> int:
    """The partitions `topic` is created with: RTDASH_GATEWAY_TOPIC_PARTITIONS for the gateway topic,
    RTDASH_ORDERS_TOPIC_PARTITIONS for the orders topic, RTDASH_SIDE_TOPIC_PARTITIONS for any other."""
    return {settings.gateway_topic: settings.gateway_topic_partitions,
            settings.orders_topic: settings.orders_topic_partitions}.get(topic, settings.side_topic_partitions)


def ensure_topics(settings: Settings, topics: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet (by default `pipeline_topics`), each with `topic_partitions`,
    and add partitions to those that have fewer; returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(topics or pipeline_topics(settings))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="rtdash-topics")
    try:
        existing = set(admin.list_topics())
        created = []
        for topic in wanted:
            if topic in existing:
                continue
            try:
                admin.create_topics([NewTopic(topic, topic_partitions(settings, topic), 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        grow = {}
        for description in admin.describe_topics([t for t in wanted if t not in created]):
            have, want = len(description["partitions"]), topic_partitions(settings, description["name"])
            if description.get("error_code", 0) == 0 and have < want:
                grow[description["name"]] = NewPartitions(total_count=want)
                log.info("topic %s: %d partitions, adding %d", description["name"], have, want - have)
        if grow:
            admin.create_partitions(grow)
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
