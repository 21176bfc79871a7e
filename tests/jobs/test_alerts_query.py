"""The alerts query on the real clock, Redis and broker: rules firing, surviving a restart, resolving."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from jobs.alerts import query_name, start
from rtdash.channels import ALERTS, snapshot_key

pytestmark = pytest.mark.integration

PREFIX = "alertstest"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0):
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


def test_rules_fire_resolve_and_survive_a_restart_with_short_windows(spark, kafka, stack_settings, jobs_redis,
                                                                       redis_client, tmp_path):
    """Two-minute windows, evaluated every second: minute counts written as the orders and traffic jobs
    would make orders_drop pending then firing after 2 s and the 5xx share fire at once; a restarted
    query keeps both firing without announcing them again; fixed series resolve both."""
    from kafka import KafkaConsumer

    from rtdash.kafka_admin import ensure_topics

    job = stack_settings.model_copy(update={
        "redis_url": jobs_redis, "redis_prefix": PREFIX, "home": tmp_path, "alerts_topic": "alerts.jobtest",
        "alerts_eval_seconds": 1, "alert_orders_window_minutes": 2, "alert_orders_min_volume": 20,
        "alert_orders_drop_threshold": 0.5, "alert_orders_pending_seconds": 2, "alert_5xx_window_minutes": 2,
        "alert_5xx_threshold": 0.1, "alert_5xx_min_requests": 10, "alert_5xx_pending_seconds": 0})
    ensure_topics(job, [job.alerts_topic])
    consumer = KafkaConsumer(job.alerts_topic, bootstrap_servers=job.kafka_servers, auto_offset_reset="earliest")
    received: list[tuple[str, dict]] = []

    def changes() -> list[tuple[str, str]]:
        for records in consumer.poll(timeout_ms=200).values():
            received.extend((r.key.decode(), json.loads(r.value)) for r in records)
        return [(key, change["state"]) for key, change in received]

    def alerts() -> dict[str, dict]:
        text = redis_client.get(snapshot_key(PREFIX, ALERTS))
        return {a["rule"]: a for a in json.loads(text)["data"]["alerts"]} if text else {}

    def put(series: str, counts: dict[int, int]) -> None:
        """Set minute counts of a series ("orders:minute:{date}:count"), by minute offset from now (UTC)."""
        now = datetime.now(timezone.utc)
        for offset, count in counts.items():
            minute = now + timedelta(minutes=offset)
            redis_client.hset(f"{PREFIX}:" + series.format(date=f"{minute:%Y-%m-%d}"), f"{minute:%H:%M}", count)

    # The earlier two minutes had orders, the last two none (still so if a minute begins meanwhile);
    # half of the recent requests failed.
    put("orders:minute:{date}:count", {-5: 30, -4: 30, -3: 30})
    put("traffic:minute:{date}:requests", {offset: 100 for offset in range(-3, 3)})
    put("traffic:minute:{date}:errors", {offset: 50 for offset in range(-3, 3)})

    query = start(spark, job)
    try:
        assert query.name == query_name(job) == "alerts[alertstest]"
        firing = wait_for(lambda: (a := alerts()) and all(a.get(rule, {}).get("state") == "firing"
                                                          for rule in ("orders_drop", "gateway_5xx_share")) and a,
                          "both rules firing in the alerts snapshot")
        assert firing["orders_drop"]["value"] == 1.0 and firing["orders_drop"]["baseline"] >= 30
        assert firing["gateway_5xx_share"]["value"] == 0.5 and firing["gateway_5xx_share"]["baseline"] is None
        wait_for(lambda: len(changes()) >= 3, "three state changes on Kafka")
        assert changes() == [("orders_drop", "pending"), ("gateway_5xx_share", "firing"), ("orders_drop", "firing")]
        pending, fired = (change for key, change in received if key == "orders_drop")
        assert datetime.fromisoformat(fired["since"]) - datetime.fromisoformat(pending["since"]) >= timedelta(seconds=2)
    finally:
        query.stop()

    # A restart: the rules stay firing, since unchanged, and nothing is announced again.
    def evaluated_after(before: int) -> int:
        return wait_for(lambda: (at := int(redis_client.get(f"{PREFIX}:alerts:evaluated"))) > before and at,
                        "an evaluation by the restarted query")

    query = start(spark, job)
    try:
        # Two evaluations after the restart: the first one has finished, Kafka included.
        evaluated_after(evaluated_after(int(redis_client.get(f"{PREFIX}:alerts:evaluated"))))
        assert {rule: (a["state"], a["since"]) for rule, a in alerts().items()} == \
            {rule: (a["state"], a["since"]) for rule, a in firing.items()}
        assert [len(changes()) for _ in range(5)] == [3] * 5   # a second of polls: nothing new

        # Orders back to their level, no more errors: both resolve.
        put("orders:minute:{date}:count", {offset: 30 for offset in range(-8, 3)})
        put("traffic:minute:{date}:errors", {offset: 0 for offset in range(-3, 3)})
        wait_for(lambda: alerts() == {} and redis_client.exists(snapshot_key(PREFIX, ALERTS)),
                 "an empty alerts snapshot")
        wait_for(lambda: len(changes()) >= 5, "two resolutions on Kafka")
        assert sorted(changes()[3:]) == [("gateway_5xx_share", "resolved"), ("orders_drop", "resolved")]
        assert redis_client.llen(f"{PREFIX}:alerts:outbox") == 0
    finally:
        query.stop()
        consumer.close()

