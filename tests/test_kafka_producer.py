"""rtdash.kafka_producer: the shared producer configuration, and bad input refused before any producer exists."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from rtdash.kafka_producer import make_producer, producer_config


def test_base_configuration_with_a_service_s_own_values():
    config = producer_config("127.0.0.1:19092", client_id="rtdash-gateway", acks=1, linger_ms=50,
                             queue_messages=10_000, extra={"enable.idempotence": False})
    assert config == {"bootstrap.servers": "127.0.0.1:19092", "client.id": "rtdash-gateway", "acks": 1,
                      "linger.ms": 50, "queue.buffering.max.messages": 10_000,
                      "queue.buffering.max.kbytes": 1_048_576, "message.timeout.ms": 120_000,
                      "reconnect.backoff.max.ms": 1000, "partitioner": "murmur2_random", "log_level": 3,
                      "enable.idempotence": False}
    assert producer_config("k:1", client_id="c", delivery_timeout_s=2.5)["message.timeout.ms"] == 2500
    assert producer_config("k:1", client_id="c", queue_bytes=64 << 20)["queue.buffering.max.kbytes"] == 65_536
    assert producer_config("k:1", client_id="c", queue_bytes=1025)["queue.buffering.max.kbytes"] == 2


@pytest.mark.parametrize("options, message", [
    ({"client_id": " "}, "client_id"),
    ({"client_id": "c", "acks": 2}, "acks"),
    ({"client_id": "c", "linger_ms": -1}, "linger_ms"),
    ({"client_id": "c", "queue_messages": 0}, "queue_messages"),
    ({"client_id": "c", "queue_bytes": 1000}, "queue_bytes"),
    ({"client_id": "c", "extra": {"queue.buffering.max.kbytes": 1}}, "queue.buffering.max.kbytes through"),
    ({"client_id": "c", "delivery_timeout_s": 0}, "delivery_timeout_s"),
    ({"client_id": "c", "extra": {"linger.ms": 1}}, "linger.ms through the arguments"),
])
def test_bad_values_are_refused_with_their_name(options, message):
    with pytest.raises(ValueError, match=message):
        producer_config("127.0.0.1:19092", **options)
    with pytest.raises(ValueError, match="bootstrap_servers"):
        producer_config("", client_id="c")


def test_a_producer_is_built_with_kafka_down_and_queues_without_blocking():
    producer = make_producer("127.0.0.1:1", client_id="rtdash-test", queue_messages=2, log_level=0)
    assert isinstance(producer, Producer)
    producer.produce("t", b"one")
    producer.produce("t", b"two")
    started = time.monotonic()
    with pytest.raises(BufferError):
        producer.produce("t", b"three")
    assert time.monotonic() - started < 0.1
    producer.purge()


def test_the_queue_is_bounded_in_bytes_of_values_too():
    """With Kafka down, values beyond queue_bytes are refused at once, whatever the count allows."""
    producer = make_producer("127.0.0.1:1", client_id="rtdash-test", queue_messages=1000, queue_bytes=4096,
                             log_level=0)
    for _ in range(4):
        producer.produce("t", b"v" * 1000, b"key")      # 4,000 bytes of values: within 4 KiB
    started = time.monotonic()
    with pytest.raises(BufferError):
        producer.produce("t", b"v" * 1000, b"key")
    assert time.monotonic() - started < 0.1
    producer.produce("t", b"v" * 96)                     # what still fits is taken
    producer.purge()
