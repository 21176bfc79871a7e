"""What the jobs' Kafka source hands a micro-batch, built inline: records of paid orders and gateway requests."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Row, SparkSession

from rtdash.contracts import GatewayRequest, OrderPaid, to_json

# The Kafka source's columns the jobs read.
RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def records(spark: SparkSession, values: list[bytes], *, topic: str, written_at: datetime,
            first_offset: int = 0, key: bytes = b"k") -> DataFrame:
    """`values` as records of `topic`, partition 0, offsets from `first_offset` in order, written at `written_at`."""
    rows = [Row(key=key, value=value, topic=topic, partition=0, offset=first_offset + i, timestamp=written_at)
            for i, value in enumerate(values)]
    return spark.createDataFrame(rows, RECORD_SCHEMA)


def order(order_id: str, cents: int, paid_at: datetime) -> bytes:
    """An OrderPaid event as the relay writes it."""
    return to_json(OrderPaid(order_id=order_id, trade_no="T" + order_id, amount_cents=cents, paid_at=paid_at,
                             trade_status="TRADE_SUCCESS", notify_id="N" + order_id, recorded_at=paid_at))


def gateway_request(**fields) -> bytes:
    """A shopper's GET /search answered 200 as the gateway writes it; `fields` (started_at at least) set the rest."""
    base = dict(request_id="r", method="GET", path="/search", route="shop", query={},
                status=200, request_bytes=0, response_bytes=10, total_ms=12.5, gateway_ms=1.0, visitor_id="v1",
                source="proxy", user_agent="Mozilla/5.0 Firefox/140.0")
    return to_json(GatewayRequest(**(base | fields)))


def dead_letters(bootstrap_servers: str, topic: str) -> dict[bytes, dict[str, bytes]]:
    """The dead letters a job wrote to `topic`, from the start: original value -> headers.

    Read until no record came for five seconds (the jobs write them before their figures reach Redis).
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    try:
        return {message.value: dict(message.headers) for message in consumer}
    finally:
        consumer.close()
