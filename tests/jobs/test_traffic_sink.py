"""The traffic sink against a real redis-server: rankings, the recent window, replays, bounded state."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from jobs.checkpoint import Batch
from jobs.traffic_sink import TrafficSink
from rtdash.channels import (SEARCH_TERMS_RECENT, SEARCH_TERMS_TODAY, TRAFFIC_CHANNELS, TRAFFIC_TODAY, epoch_key,
                             history_key, snapshot_key)

DAY = datetime(2026, 3, 1, tzinfo=timezone.utc)


def row(kind: str, at: datetime | None = None, name: str | None = None, n: int = 1, **counts) -> dict:
    figures = {"errors": 0, "page_views": 0, "searches": 0, "bots": 0, "latest_ms": None} | counts
    return {"kind": kind, "date": at.strftime("%Y-%m-%d") if at else None,
            "minute": at.strftime("%H:%M") if at and kind not in ("user", "product") else None,
            "name": name, "bucket": 300 if kind == "route" else None, "n": n, **figures}


def minute_rows(at: datetime, visitors: int = 3) -> list[dict]:
    """One minute of traffic: requests, a route, visitors, a user, a term and a product."""
    ms = int(at.timestamp() * 1000)
    return ([row("minute", at, n=5, page_views=4, searches=1, latest_ms=ms), row("route", at, "shop", n=5),
             row("user", at, "u1"), row("term", at, "lamp"), row("product", at, "P1")]
            + [row("visitor", at, f"v{i}") for i in range(visitors)])


def snapshot(client, prefix: str, channel: str) -> dict:
    return json.loads(client.get(snapshot_key(prefix, channel)))["data"]


def test_rankings_break_ties_by_name_and_the_recent_window_follows_the_clock(redis_client, job_settings):
    sink = TrafficSink(redis_client, job_settings, "traffic")
    at = DAY + timedelta(hours=10)
    rows = [row("minute", at, n=9, page_views=9, searches=9, latest_ms=int(at.timestamp() * 1000))]
    rows += [row("term", at, term, n=n) for term, n in (("tv", 2), ("lamp", 3), ("desk", 2), ("Ärger", 2))]
    assert sink.apply(Batch("q", 0, ""), rows).applied
    assert not sink.apply(Batch("q", 0, ""), rows).applied  # a replay changes nothing
    prefix = job_settings.redis_prefix
    assert snapshot(redis_client, prefix, SEARCH_TERMS_TODAY)["terms"] == [
        {"term": "lamp", "count": 3}, {"term": "desk", "count": 2}, {"term": "tv", "count": 2},
        {"term": "Ärger", "count": 2}]  # ties: term ascending, by code point
    recent = snapshot(redis_client, prefix, SEARCH_TERMS_RECENT)
    assert (recent["window_start"], recent["window_end"]) == ("2026-03-01T09:51:00+00:00", "2026-03-01T10:01:00+00:00")
    assert recent["terms"][0] == {"term": "lamp", "count": 3}

    # eleven minutes later the window has moved past those searches
    later = at + timedelta(minutes=11)
    sink.apply(Batch("q", 1, ""), [row("minute", later, latest_ms=int(later.timestamp() * 1000))])
    recent = snapshot(redis_client, prefix, SEARCH_TERMS_RECENT)
    assert recent == {"window_start": "2026-03-01T10:02:00+00:00", "window_end": "2026-03-01T10:12:00+00:00",
                      "terms": []}
    assert snapshot(redis_client, prefix, SEARCH_TERMS_TODAY)["terms"][0] == {"term": "lamp", "count": 3}

    # every channel's envelopes carry its epoch; its history ends with the live twin of its snapshot
    for channel in TRAFFIC_CHANNELS:
        whole = json.loads(redis_client.get(snapshot_key(prefix, channel)))
        assert whole["epoch"] == redis_client.get(epoch_key(prefix, channel)).decode() and whole["snapshot"] is True
        entries = [json.loads(f[b"envelope"]) for _, f in redis_client.xrange(history_key(prefix, channel))]
        assert [e["seq"] for e in entries] == list(range(1, whole["seq"] + 1))
        assert {e["epoch"] for e in entries} == {whole["epoch"]} and "snapshot" not in entries[-1]


def test_state_stays_bounded_over_days_of_event_time(redis_client, job_settings):
    """Thirty simulated hours a minute apart... in four days: minute detail goes once its day is
    over (plus lateness and the recent window), whole days after RTDASH_TRAFFIC_KEEP_DAYS."""
    settings = job_settings.model_copy(update={"traffic_keep_days": 2, "traffic_lateness_seconds": 300})
    sink = TrafficSink(redis_client, settings, "traffic")
    prefix = settings.redis_prefix
    key_counts = []
    batch = 0
    for day in range(4):
        for hour in range(0, 24, 3):   # eight busy minutes a day keep the test fast
            at = DAY + timedelta(days=day, hours=hour, minutes=7)
            sink.apply(Batch("q", batch, ""), minute_rows(at))
            batch += 1
        key_counts.append(len(redis_client.keys(f"{prefix}:*")))
    dates = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    # today's minute detail is there; yesterday's went once the clock passed its end + 10 min + lateness
    assert redis_client.exists(f"{prefix}:traffic:visitors:2026-03-04:21:07")
    assert redis_client.exists(f"{prefix}:search:terms:2026-03-04:21:07")
    assert not redis_client.keys(f"{prefix}:traffic:visitors:2026-03-03:*")
    assert not redis_client.keys(f"{prefix}:routes:latency:2026-03-03:*")
    assert not redis_client.keys(f"{prefix}:search:terms:2026-03-03:*")
    # yesterday's day figures are kept (keep_days 2), the first day's are gone
    assert redis_client.hget(f"{prefix}:traffic:day:2026-03-03", "page_views") == b"32"
    assert redis_client.pfcount(f"{prefix}:traffic:visitors:2026-03-03") == 3
    assert not any(redis_client.keys(f"{prefix}:*{dates[0]}*"))
    # so the number of keys levels off instead of growing with every day
    assert key_counts[3] == key_counts[2], key_counts
    assert snapshot(redis_client, prefix, TRAFFIC_TODAY) == {
        "date": "2026-03-04", "page_views": 32, "visitors": 3, "logged_in_users": 1, "searches": 8,
        "bot_requests": 0}
    for key in redis_client.keys(f"{prefix}:traffic:day:*"):
        assert 0 < redis_client.ttl(key) <= 2 * 86400  # and a wall-clock lifetime for a stopped job
