"""jobs/alerts.py: evaluations at the query's ticks, and the query on the real clock, Redis and broker."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from jobs.alerts import Evaluation, query_name, start
from jobs.alerts_rules import AlertState, rules_from
from jobs.alerts_sink import AlertStore
from rtdash.channels import ALERTS, snapshot_key
from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually

PREFIX = "alertstest"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def snapshot(redis_client) -> dict:
    return json.loads(redis_client.get(snapshot_key(PREFIX, ALERTS)))


def test_evaluations_survive_a_restart(redis_client, tmp_path):
    """Two evaluators on one Redis (a query and its restart): the firing rule neither fires again nor is
    forgotten, and its state changes wait in the outbox (sending is left out here)."""
    settings = Settings(_env_file=None, home=tmp_path, redis_prefix=PREFIX, kafka_port=free_port(),
                        alert_rules="orders_drop", alert_orders_window_minutes=2, alert_orders_min_volume=10,
                        alert_orders_pending_seconds=60, alerts_eval_seconds=60)
    day = f"{PREFIX}:orders:minute:2026-11-26:count"
    redis_client.hset(day, mapping={"11:56": 10, "11:57": 10})     # the earlier window; nothing since
    clock = [T0.timestamp() + 0.3]

    def evaluation() -> Evaluation:
        return Evaluation(settings, rules_from(settings), AlertStore(redis_client, PREFIX, ZoneInfo("UTC")),
                          clock=lambda: clock[0], send=lambda *_: 0)

    first = evaluation()
    first(None, 0)
    assert first.store.states()["orders_drop"].state == "pending"
    clock[0] += 60
    first(None, 1)
    assert first.store.states()["orders_drop"] == AlertState(
        "firing", T0 + MINUTE, 1.0, 10.0,       # 12:01: 11:59-12:00 against 11:57-11:58
        "0 paid orders in the last 2 min, 10 in the 2 min before: down 100% (alert at a drop of 50%)")

    restarted = evaluation()
    clock[0] += 60                                              # 12:02: the windows moved on one minute
    redis_client.hset(day, mapping={"11:58": 10})
    restarted(None, 0)
    assert restarted.store.states()["orders_drop"].since == T0 + MINUTE
    assert [(c["state"], c["since"]) for c in map(json.loads, restarted.store.outbox())] == [
        ("pending", "2026-11-26T12:00:00.000Z"), ("firing", "2026-11-26T12:01:00.000Z")]

    redis_client.hset(day, mapping={"12:00": 10, "12:01": 10})
    clock[0] += 60
    restarted(None, 1)
    assert restarted.store.states() == {} and snapshot(redis_client)["data"] == {"alerts": []}
    assert [json.loads(v)["state"] for v in restarted.store.outbox()] == ["pending", "firing", "resolved"]


@pytest.mark.integration
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
        firing = eventually(lambda: (a := alerts()) and all(a.get(rule, {}).get("state") == "firing"
                                                            for rule in ("orders_drop", "gateway_5xx_share")) and a,
                            timeout=60, what="both rules firing in the alerts snapshot")
        assert firing["orders_drop"]["value"] == 1.0 and firing["orders_drop"]["baseline"] >= 30
        assert firing["gateway_5xx_share"]["value"] == 0.5 and firing["gateway_5xx_share"]["baseline"] is None
        eventually(lambda: len(changes()) >= 3, timeout=60, what="three state changes on Kafka")
        assert changes() == [("orders_drop", "pending"), ("gateway_5xx_share", "firing"), ("orders_drop", "firing")]
        pending, fired = (change for key, change in received if key == "orders_drop")
        assert datetime.fromisoformat(fired["since"]) - datetime.fromisoformat(pending["since"]) >= timedelta(seconds=2)
    finally:
        query.stop()

    # A restart: the rules stay firing, since unchanged, and nothing is announced again.
    def evaluated_after(before: int) -> int:
        return eventually(lambda: (at := int(redis_client.get(f"{PREFIX}:alerts:evaluated"))) > before and at,
                          timeout=60, what="an evaluation by the restarted query")

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
        eventually(lambda: alerts() == {} and redis_client.exists(snapshot_key(PREFIX, ALERTS)),
                   timeout=60, what="an empty alerts snapshot")
        eventually(lambda: len(changes()) >= 5, timeout=60, what="two resolutions on Kafka")
        assert sorted(changes()[3:]) == [("gateway_5xx_share", "resolved"), ("orders_drop", "resolved")]
        assert redis_client.llen(f"{PREFIX}:alerts:outbox") == 0
    finally:
        query.stop()
        consumer.close()

