"""jobs/reconcile.py on small inputs: the batch figures from static records, the live figures from Redis, and
the comparison's tolerance (unique counts within 2%, everything else exact)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import partial

import kafka_records
from jobs.checkpoint import Batch
from jobs.orders_sink import MinuteTotal, OrdersSink
from jobs.reconcile import (Figure, Live, OrderFigures, TrafficFigures, batch_orders, batch_traffic, compare_orders,
                            compare_traffic, read_live, read_stored)
from jobs.traffic_events import classify
from jobs.traffic_figures import Facts, figures, with_lateness
from jobs.traffic_sink import TrafficSink
from rtdash.channels import (ORDERS_PER_MINUTE, ORDERS_TODAY, SEARCH_PRODUCTS_TODAY, SEARCH_TERMS_TODAY,
                             TRAFFIC_PER_MINUTE, TRAFFIC_TODAY, snapshot_key)

DAY = "2026-11-26"
T0 = datetime(2026, 11, 26, 15, 59, 30, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 26, 16, 1, 5, tzinfo=timezone.utc)
YESTERDAY = datetime(2026, 11, 25, 23, 59, 59, tzinfo=timezone.utc)


def test_orders_of_the_day_are_counted_once_each_and_bad_records_not_at_all(spark, job_settings):
    records = kafka_records.records(spark, [
        kafka_records.order("A", 1000, T0), kafka_records.order("A", 1000, T0),   # the relay re-sent A
        kafka_records.order("B", 250, LATER), kafka_records.order("C", -5, T0), b"not json at all",
        kafka_records.order("Y", 900, YESTERDAY)], topic="orders", written_at=LATER)
    assert batch_orders(records, job_settings, DAY) == OrderFigures(2, 1250, {"15:59": (1, 1000),
                                                                              "16:01": (1, 250)})


def test_traffic_of_the_day_by_the_jobs_rules(spark, job_settings):
    request = kafka_records.gateway_request
    values = [
        request(started_at=T0, search_term="Desk  Lamp", result_product_ids=["P1", "P2"], visitor_id="v1",
                user_id="u1"),
        request(started_at=T0, search_term="desk lamp", result_product_ids=["P2"], visitor_id="v2"),
        request(started_at=LATER, search_term="kettle", result_product_ids=["P3", "P3"], visitor_id="v1"),
        request(started_at=LATER, path="/products/P2", visitor_id="v3", status=503),            # no page view
        request(started_at=LATER, path="/products/P2", visitor_id="bot", user_agent="Googlebot/2.1"),
        request(started_at=YESTERDAY, search_term="lamp", visitor_id="v9"),                     # another day
        b"not json at all"]
    out = batch_traffic(kafka_records.records(spark, values, topic="gateway", written_at=LATER), job_settings, DAY)
    assert out.totals == {"page_views": 3, "visitors": 2, "logged_in_users": 1, "searches": 3, "bot_requests": 1}
    assert out.minutes == {"15:59": {"page_views": 2, "visitors": 2, "requests": 2, "errors": 0},
                           "16:01": {"page_views": 1, "visitors": 1, "requests": 2, "errors": 1}}
    assert out.terms == [("desk lamp", 2), ("kettle", 1)]
    assert out.products == [("P2", 2), ("P1", 1), ("P3", 1)]   # a product listed twice in one search counts once


def test_a_day_the_snapshots_moved_past_is_read_from_the_day_keys_the_sinks_keep(spark, job_settings, redis_client):
    records = kafka_records.records(spark, [
        kafka_records.gateway_request(started_at=T0, search_term="lamp", result_product_ids=["P1"], user_id="u1"),
        kafka_records.gateway_request(started_at=LATER, path="/products/P1", visitor_id="v2", status=503),
        kafka_records.gateway_request(started_at=LATER, path="/products/P1", visitor_id="v3"),
        kafka_records.gateway_request(started_at=LATER, visitor_id="bot", user_agent="Googlebot/2.1")],
        topic="gateway", written_at=LATER)
    rows = figures(Facts()(with_lateness(classify(records, settings=job_settings), None))).toArrow().to_pylist()
    TrafficSink(redis_client, job_settings, "traffic").apply(Batch("q", 0, ""), rows)
    OrdersSink(redis_client, job_settings.redis_prefix).apply(
        Batch("q", 0, ""), "2026-11-30", [MinuteTotal(DAY, "15:59", 1, 1000), MinuteTotal(DAY, "16:01", 1, 250)])
    stored = read_stored(redis_client, job_settings.redis_prefix, DAY)
    assert stored.orders == OrderFigures(2, 1250, {"15:59": (1, 1000), "16:01": (1, 250)})
    assert stored.traffic == batch_traffic(records, job_settings, DAY)
    assert read_stored(redis_client, job_settings.redis_prefix, "2026-11-24") == Live(None, None, {})


def envelope(data: dict) -> str:
    return json.dumps({"channel": "c", "epoch": "e", "seq": 1, "snapshot": True, "data": data})


def test_live_figures_come_from_the_snapshots_of_that_day_only(redis_client):
    prefix = "recon"
    snapshots = {
        ORDERS_TODAY: {"date": DAY, "count": 2, "amount_cents": 1250, "last_recorded_at": "x"},
        ORDERS_PER_MINUTE: {"date": DAY, "minutes": {"15:59": {"count": 1, "amount_cents": 1000},
                                                     "16:01": {"count": 1, "amount_cents": 250}}},
        TRAFFIC_TODAY: {"date": "2026-11-25", "page_views": 1, "visitors": 1, "logged_in_users": 0, "searches": 0,
                        "bot_requests": 0},
        TRAFFIC_PER_MINUTE: {"date": "2026-11-25", "minutes": {}},
        SEARCH_TERMS_TODAY: {"date": "2026-11-25", "terms": []}}
    for channel, data in snapshots.items():
        redis_client.set(snapshot_key(prefix, channel), envelope(data))
    live = read_live(redis_client, prefix, DAY)
    assert live.orders == OrderFigures(2, 1250, {"15:59": (1, 1000), "16:01": (1, 250)})
    assert live.traffic is None   # the traffic snapshots are of another day (and one is missing)
    assert live.dates[TRAFFIC_TODAY] == "2026-11-25" and live.dates[SEARCH_PRODUCTS_TODAY] is None


def traffic(visitors: int, minute_visitors: int = 10, terms=(("lamp", 3), ("kettle", 1))) -> TrafficFigures:
    return TrafficFigures({"page_views": 40, "visitors": visitors, "logged_in_users": 5, "searches": 4,
                           "bot_requests": 2},
                          {"10:00": {"page_views": 40, "visitors": minute_visitors, "requests": 45, "errors": 1}},
                          list(terms), [("P1", 4)])


def by_name(figures: list[Figure]) -> dict[str, Figure]:
    return {f.name: f for f in figures}


def test_unique_counts_agree_within_two_percent_and_everything_else_exactly():
    exact = traffic(1000)
    assert all(f.ok for f in compare_traffic(traffic(1020, 11), exact))   # 2% of 1000; a minute's 1
    rows = by_name(compare_traffic(traffic(1021, 12), exact))
    assert not rows["traffic.today visitors"].ok and rows["traffic.today visitors"].difference == 21
    assert not rows["traffic.per_minute 10:00 visitors"].ok
    assert rows["traffic.per_minute minutes"].differing == 1
    assert rows["traffic.today page_views"].ok


def test_a_ranking_that_differs_names_each_entry():
    rows = by_name(compare_traffic(traffic(1000, terms=[("lamp", 3), ("tv", 1)]), traffic(1000)))
    assert rows["search.terms.today top 20"].differing == 2 and not rows["search.terms.today top 20"].ok
    assert (rows["search.terms.today 'kettle'"].live, rows["search.terms.today 'kettle'"].batch) == (None, 1)
    assert (rows["search.terms.today 'tv'"].live, rows["search.terms.today 'tv'"].batch) == (1, None)
    assert "search.terms.today 'lamp'" not in rows


def test_orders_are_exact_and_missing_live_figures_never_agree():
    batch = OrderFigures(2, 1250, {"15:59": (1, 1000), "16:01": (1, 250)})
    assert all(f.ok for f in compare_orders(batch, batch))
    rows = by_name(compare_orders(OrderFigures(2, 1251, {"15:59": (1, 1000), "16:01": (1, 251)}), batch,
                                  "order database"))
    assert [name for name, f in rows.items() if not f.ok] == [
        "orders.today amount_cents (order database)", "orders.per_minute minutes (order database)",
        "orders.per_minute 16:01 amount_cents (order database)"]
    assert not any(f.ok for f in compare_orders(None, batch))
