"""Topics get the partitions their settings name, on the real broker; a topic with fewer gets more."""
from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient

from rtdash.kafka_admin import ensure_topics, pipeline_topics

pytestmark = pytest.mark.integration


def partitions(settings, topics: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="rtdash-test-partitions")
    try:
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(topics)}
    finally:
        admin.close()


def test_the_stack_creates_each_pipeline_topic_with_its_partitions(kafka, stack_settings):
    settings = stack_settings
    assert partitions(settings, pipeline_topics(settings)) == {
        settings.gateway_topic: settings.gateway_topic_partitions, settings.orders_topic: settings.orders_topic_partitions,
        settings.gateway_dlq_topic: 1, settings.orders_dlq_topic: 1, settings.alerts_topic: 1,
        settings.orders_realtime_topic: 1}   # the real-time orders path's rows, in either orders mode
    assert settings.gateway_topic_partitions == 3    # the default: the ground-truth tests read several partitions


def test_a_topic_with_fewer_partitions_than_its_setting_gets_more_and_never_fewer(kafka, stack_settings):
    name = f"gateway.grow-{uuid.uuid4().hex[:8]}"
    settings = stack_settings.model_copy(update={"gateway_topic": name, "gateway_topic_partitions": 2})
    assert ensure_topics(settings, [name]) == [name]
    assert partitions(settings, [name]) == {name: 2}

    assert ensure_topics(settings.model_copy(update={"gateway_topic_partitions": 5}), [name]) == []
    assert partitions(settings, [name]) == {name: 5}

    assert ensure_topics(settings.model_copy(update={"gateway_topic_partitions": 1}), [name]) == []
    assert partitions(settings, [name]) == {name: 5}
