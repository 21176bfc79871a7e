"""The traffic job's pure stages on small static DataFrames: classify, facts, figures."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.traffic import GAMMA, MIN_MS, classify, normalised_term, transform
from rtdash.contracts import GatewayRequest, to_json
from rtdash.traffic_rules import normalise_search_term

AT = datetime(2026, 3, 1, 10, 0, 5, tzinfo=timezone.utc)
RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def request(**fields) -> bytes:
    base = dict(request_id="r", started_at=AT, method="GET", path="/search", route="shop", query={},
                status=200, request_bytes=0, response_bytes=10, total_ms=12.5, gateway_ms=1.0, visitor_id="v1",
                source="proxy", user_agent="Mozilla/5.0 Firefox/140.0")
    return to_json(GatewayRequest(**(base | fields)))


def records(spark, values: list[bytes], written_at: datetime = AT + timedelta(minutes=2)):
    rows = [(b"k", v, "gateway", 0, i, written_at) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, RECORD_SCHEMA)


@pytest.mark.parametrize("term", ["  Phone   Case ", "ＰＨＯＮＥ\u3000case", "Straße", "STRASSE", "ﬁle", "Ǆ",
                                  "tab\there", "  ", "", "ΣΑΣ", "İstanbul", "<b>lamp</b>"])
def test_search_terms_are_normalised_on_the_jvm_as_in_python(spark, term):
    got = spark.createDataFrame([(term,)], "t string").select(normalised_term(F.col("t")).alias("n")).first().n
    assert got == normalise_search_term(term)


def test_page_views_bots_and_logged_in_users_follow_the_design_rules(spark, job_settings):
    values = [request(),                                            # page view with no search
              request(user_agent="Mozilla/5.0 (compatible; Googlebot/2.1)"),   # bot by User-Agent
              request(user_agent="Slurp"),                          # bot, any case
              request(bot=True),                                    # bot by the gateway's flag
              request(method="POST", path="/cart", user_id="u1"),   # not a page view, logged in
              request(status=304),                                  # 3xx is a page view
              request(status=404, user_id="u2"),                    # 404: neither
              request(path="/order_center/order/alipay/callback"),  # notify: not a page view
              request(status=503, path="/products/1")]              # 5xx: an error, not a page view
    out = classify(records(spark, values), settings=job_settings)
    assertDataFrameEqual(out.select("offset", "bot", "page_view", "error", "user_id"), [
        (0, False, True, False, None), (1, True, False, False, None), (2, True, False, False, None),
        (3, True, False, False, None), (4, False, False, False, "u1"), (5, False, True, False, None),
        (6, False, False, False, None), (7, False, False, False, None), (8, False, False, True, None)],
        checkRowOrder=False)


def test_a_batch_becomes_its_figures(spark, job_settings):
    values = [request(visitor_id="v1", search_term=" Lamp ", result_product_ids=["P1", "P2", "P1"]),
              request(visitor_id="v2", search_term="LAMP", result_product_ids=["P2"], user_id="u1"),
              request(visitor_id="v1", search_term="  ", total_ms=200.0),   # blank: a page view, no search
              request(visitor_id="v3", user_agent="crawler", search_term="lamp"),   # a bot's search is no search
              request(status=502, total_ms=0.0, started_at=AT + timedelta(minutes=1)),
              b"{broken"]
    out = transform(records(spark, values), settings=job_settings, clock_ms=None)
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
    def bucket(ms: float) -> int:  # DDSketch: GAMMA^(i-1) < ms <= GAMMA^i
        return math.ceil(math.log(max(ms, MIN_MS)) / math.log(GAMMA))
    assert GAMMA ** (bucket(12.5) - 1) < 12.5 <= GAMMA ** bucket(12.5)
    assert sorted((r.minute, r.bucket, r.n, r.errors) for r in by_kind["route"]) == [
        ("10:00", bucket(12.5), 2, 0), ("10:00", bucket(200.0), 1, 0), ("10:01", bucket(0.0), 1, 1)]
    assert [r.n for r in by_kind["invalid"]] == [1]


def test_events_later_than_the_lateness_are_counted_as_late_only(spark, job_settings):
    """Late: the event's minute starts more than the lateness (300 s) before the clock's minute."""
    clock = AT + timedelta(minutes=30)            # 10:30:05; its minute 10:30, the bound 10:25:00
    clock_ms = int(clock.timestamp() * 1000)
    values = [request(started_at=AT + timedelta(minutes=25)),                     # 10:25:05, counts
              request(started_at=AT + timedelta(minutes=24, seconds=54)),         # 10:24:59, late
              request(started_at=clock - timedelta(days=1), user_agent="Googlebot")]
    out = transform(records(spark, values, written_at=clock), settings=job_settings, clock_ms=clock_ms)
    rows = {(r.kind, r.date): r.n for r in out.collect()}
    assert rows[("late", "2026-03-01")] == 1 and rows[("late", "2026-02-28")] == 1
    assert rows[("minute", "2026-03-01")] == 1


def test_an_event_starting_after_its_record_was_written_is_out_of_range(spark, job_settings):
    written = AT + timedelta(minutes=2)
    limit = timedelta(seconds=job_settings.traffic_max_future_seconds)
    values = [request(started_at=written + limit), request(started_at=written + limit + timedelta(seconds=1))]
    out = classify(records(spark, values, written_at=written), settings=job_settings)
    assert [r.reason for r in out.orderBy("offset").collect()] == [None, "started_at is in the future"]
