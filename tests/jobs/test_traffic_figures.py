"""jobs/traffic_figures.py through the job's transform on small static DataFrames: facts summed, lateness."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import partial

from jobs.traffic import transform
from jobs.traffic_figures import late_before_ms
from kafka_records import gateway_request, records

AT = datetime(2026, 3, 1, 10, 0, 5, tzinfo=timezone.utc)
request = partial(gateway_request, started_at=AT)
gateway_records = partial(records, topic="gateway", written_at=AT + timedelta(minutes=2))


def test_a_batch_becomes_its_figures(spark, job_settings):
    values = [request(visitor_id="v1", search_term=" Lamp ", result_product_ids=["P1", "P2", "P1"]),
              request(visitor_id="v2", search_term="LAMP", result_product_ids=["P2"], user_id="u1"),
              request(visitor_id="v1", search_term="  ", total_ms=200.0),   # blank: a page view, no search
              request(visitor_id="v3", user_agent="crawler", search_term="lamp"),   # a bot's search is no search
              request(status=502, total_ms=0.0, started_at=AT + timedelta(minutes=1)),
              b"{broken"]
    out = transform(gateway_records(spark, values), settings=job_settings, clock_ms=None)
    by_kind = {}
    for r in out.collect():
        by_kind.setdefault(r.kind, []).append(r)
    minute = {r.minute: (r.n, r.errors, r.page_views, r.searches, r.bots) for r in by_kind["minute"]}
    assert minute == {"10:00": (3, 0, 3, 2, 1), "10:01": (1, 1, 0, 0, 0)}
    assert max(r.latest_ms for r in by_kind["minute"]) == int((AT + timedelta(minutes=1)).timestamp() * 1000)
    assert sorted((r.name, r.n) for r in by_kind["term"]) == [("lamp", 2)]
    assert sorted((r.name, r.n) for r in by_kind["product"]) == [("P1", 1), ("P2", 2)]  # once per search
    assert sorted((r.minute, r.name) for r in by_kind["visitor"]) == [("10:00", "v1"), ("10:00", "v2")]
    assert [r.name for r in by_kind["user"]] == ["u1"]
    # DDSketch buckets, GAMMA^(i-1) < ms <= GAMMA^i: 12.5 ms in 127, 200 ms in 265, 0 ms in MIN_MS's, -345
    assert sorted((r.minute, r.bucket, r.n, r.errors) for r in by_kind["route"]) == [
        ("10:00", 127, 2, 0), ("10:00", 265, 1, 0), ("10:01", -345, 1, 1)]
    assert [r.n for r in by_kind["invalid"]] == [1]


def test_events_later_than_the_lateness_are_counted_as_late_only(spark, job_settings):
    """Late: the event's minute starts more than the lateness (300 s) before the clock's minute."""
    clock = AT + timedelta(minutes=30)            # 10:30:05; its minute 10:30, the bound 10:25:00
    clock_ms = int(clock.timestamp() * 1000)
    values = [request(started_at=AT + timedelta(minutes=25)),                     # 10:25:05, counts
              request(started_at=AT + timedelta(minutes=24, seconds=54)),         # 10:24:59, late
              request(started_at=clock - timedelta(days=1), user_agent="Googlebot")]
    out = transform(gateway_records(spark, values, written_at=clock), settings=job_settings, clock_ms=clock_ms)
    rows = {(r.kind, r.date): r.n for r in out.collect()}
    assert rows[("late", "2026-03-01")] == 1 and rows[("late", "2026-02-28")] == 1
    assert rows[("minute", "2026-03-01")] == 1


def test_the_lateness_bound_is_the_clocks_minute_less_the_lateness():
    """Whole minutes: the bound stays put for the minute (the batch's compiled code with it)."""
    bound = int(datetime(2026, 3, 1, 10, 25, tzinfo=timezone.utc).timestamp() * 1000)
    for second in (0, 5, 59):
        clock_ms = int(datetime(2026, 3, 1, 10, 30, second, tzinfo=timezone.utc).timestamp() * 1000)
        assert late_before_ms(clock_ms, 300) == bound
    assert late_before_ms(None, 300) is None     # no clock yet: nothing is late


def test_lateness_is_judged_in_each_partition_against_its_own_clock(spark, job_settings):
    """The same event on two partitions: late on partition 0, whose clock is two hours ahead; counted on
    partition 1, which has no clock yet. Each partition's newest counted event is its `clock` fact."""
    from pyspark.sql import functions as F

    from jobs.traffic_events import classify
    from jobs.traffic_figures import Facts, figures, with_lateness

    batch = gateway_records(spark, [request(), request()]).withColumn("partition", F.col("offset").cast("int"))
    ahead = late_before_ms(int((AT + timedelta(hours=2)).timestamp() * 1000), 300)
    out = figures(Facts()(with_lateness(classify(batch, settings=job_settings), {0: ahead, 1: None})))
    rows = {(r.kind, r.name): (r.n, r.latest_ms) for r in out.collect()}
    assert rows[("late", None)][0] == 1 and rows[("minute", None)][0] == 1
    assert {name: latest for (kind, name), (_, latest) in rows.items() if kind == "clock"} == {
        "1": int(AT.timestamp() * 1000)}
