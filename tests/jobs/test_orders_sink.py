"""The orders job's Redis sink against a real redis-server: once per batch, exact envelopes."""
from __future__ import annotations

import json
import time

import pytest
from waiting import eventually

from jobs.checkpoint import Batch
from jobs.orders_sink import MinuteTotal, OrdersSink
from rtdash.channels import (ORDERS_PER_MINUTE, ORDERS_TODAY, epoch_key, history_key, live_channel, seq_key,
                             snapshot_key)

PREFIX = "t"
TODAY = "2026-11-26"


def batch(batch_id: int, query_id: str = "q1") -> Batch:
    return Batch(query_id, batch_id, '{"orders":{"0":%d}}' % (10 * batch_id))


@pytest.fixture
def sink(redis_client):
    return OrdersSink(redis_client, PREFIX)


@pytest.fixture
def live(redis_client):
    """Collects what the sink publishes on both order channels."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(live_channel(PREFIX, ORDERS_TODAY), live_channel(PREFIX, ORDERS_PER_MINUTE))
    for _ in range(2):  # both subscriptions confirmed before anything is published
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def received(expected: int) -> list[dict]:
        messages = []
        deadline = time.monotonic() + 5
        while len(messages) < expected and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if message:
                messages.append(json.loads(message["data"]))
        assert pubsub.get_message(timeout=0.2) is None, "more messages than expected"
        return messages

    yield received
    pubsub.close()


def snapshot(client, channel):
    return json.loads(client.get(snapshot_key(PREFIX, channel)))


def history(client, channel) -> list[dict]:
    return [json.loads(fields[b"envelope"]) for _, fields in client.xrange(history_key(PREFIX, channel))]


def test_a_batch_counts_once_and_publishes_exact_envelopes(sink, live, redis_client):
    first = [MinuteTotal(TODAY, "15:59", 2, 1250), MinuteTotal("2026-11-25", "23:59", 1, 5)]
    assert sink.apply(batch(1), TODAY, first) is True
    assert sink.apply(batch(1), TODAY, first) is False          # replayed after a crash: no change
    assert sink.apply(batch(2), TODAY, [MinuteTotal(TODAY, "16:00", 1, 100)]) is True
    assert sink.apply(batch(0), TODAY, first) is False          # an older batch neither
    assert sink.last_batch() == ("q1", 2)

    # each channel's epoch was set with its first envelope (Redis's clock, in microseconds)
    today_epoch = redis_client.get(epoch_key(PREFIX, ORDERS_TODAY)).decode()
    minute_epoch = redis_client.get(epoch_key(PREFIX, ORDERS_PER_MINUTE)).decode()
    assert today_epoch.isdigit() and abs(int(today_epoch) / 1e6 - time.time()) < 60
    assert snapshot(redis_client, ORDERS_TODAY) == {
        "channel": ORDERS_TODAY, "epoch": today_epoch, "seq": 2, "snapshot": True,
        "data": {"date": TODAY, "count": 3, "amount_cents": 1350}}
    assert snapshot(redis_client, ORDERS_PER_MINUTE) == {
        "channel": ORDERS_PER_MINUTE, "epoch": minute_epoch, "seq": 2, "snapshot": True,
        "data": {"date": TODAY, "minutes": {
            "15:59": {"count": 2, "amount_cents": 1250}, "16:00": {"count": 1, "amount_cents": 100}}}}
    published = [
        {"channel": ORDERS_TODAY, "epoch": today_epoch, "seq": 1,
         "data": {"date": TODAY, "count": 2, "amount_cents": 1250}},
        {"channel": ORDERS_PER_MINUTE, "epoch": minute_epoch, "seq": 1,
         "data": {"date": TODAY, "minutes": {"15:59": {"count": 2, "amount_cents": 1250}}}},
        {"channel": ORDERS_TODAY, "epoch": today_epoch, "seq": 2,
         "data": {"date": TODAY, "count": 3, "amount_cents": 1350}},
        # the live message carries only the minutes the batch changed
        {"channel": ORDERS_PER_MINUTE, "epoch": minute_epoch, "seq": 2,
         "data": {"date": TODAY, "minutes": {"16:00": {"count": 1, "amount_cents": 100}}}}]
    assert live(4) == published
    # the history of each channel holds exactly what was published on it, in order
    assert history(redis_client, ORDERS_TODAY) == published[0::2]
    assert history(redis_client, ORDERS_PER_MINUTE) == published[1::2]
    # an earlier day is stored, not published, and every hash expires
    assert redis_client.hgetall(f"{PREFIX}:orders:day:2026-11-25") == {b"count": b"1", b"amount_cents": b"5"}
    assert redis_client.hgetall(f"{PREFIX}:orders:minute:{TODAY}:amount") == {b"15:59": b"1250", b"16:00": b"100"}
    for key in redis_client.keys(f"{PREFIX}:orders:*"):
        assert 7 * 86400 < redis_client.ttl(key) <= 8 * 86400


def test_large_amounts_stay_exact_integers(sink, redis_client):
    big = 2**53 + 1   # a Lua number (double) on the way would round it
    sink.apply(batch(0), TODAY, [MinuteTotal(TODAY, "09:30", 1, big)])
    sink.apply(batch(1), TODAY, [MinuteTotal(TODAY, "09:30", 1, big)])
    raw = redis_client.get(snapshot_key(PREFIX, ORDERS_TODAY)).decode()
    assert f'"amount_cents":{2 * big}}}' in raw
    assert snapshot(redis_client, ORDERS_PER_MINUTE)["data"]["minutes"] == {
        "09:30": {"count": 2, "amount_cents": 2 * big}}


def test_a_new_day_gets_zero_snapshots_once(sink, live, redis_client):
    sink.apply(batch(0), "2026-11-25", [MinuteTotal("2026-11-25", "23:59", 3, 300)])
    assert sink.ensure_today(TODAY) is True
    assert sink.ensure_today(TODAY) is False
    assert sink.last_batch() == ("q1", 0)
    assert snapshot(redis_client, ORDERS_TODAY)["data"] == {"date": TODAY, "count": 0, "amount_cents": 0}
    assert snapshot(redis_client, ORDERS_PER_MINUTE)["data"] == {"date": TODAY, "minutes": {}}
    assert [m["data"] for m in live(4)] == [
        {"date": "2026-11-25", "count": 3, "amount_cents": 300},
        {"date": "2026-11-25", "minutes": {"23:59": {"count": 3, "amount_cents": 300}}},
        {"date": TODAY, "count": 0, "amount_cents": 0},
        {"date": TODAY, "minutes": {}}]
    # a batch with only yesterday's late orders still moves the dashboard to today
    sink.apply(batch(1), "2026-11-27", [MinuteTotal(TODAY, "23:58", 1, 10)])
    assert snapshot(redis_client, ORDERS_TODAY)["data"] == {"date": "2026-11-27", "count": 0, "amount_cents": 0}


def test_a_new_checkpoint_is_a_new_query_whose_batches_start_at_zero(sink, redis_client):
    """A deleted checkpoint restarts batch ids at 0 under a new query id: not replays, applied."""
    sink.apply(batch(5), TODAY, [MinuteTotal(TODAY, "10:00", 1, 100)])
    assert sink.apply(batch(0, "q2"), TODAY, [MinuteTotal(TODAY, "10:01", 2, 200)]) is True
    assert sink.apply(batch(0, "q2"), TODAY, [MinuteTotal(TODAY, "10:01", 2, 200)]) is False
    assert sink.last_batch() == ("q2", 0)
    assert snapshot(redis_client, ORDERS_TODAY)["data"] == {"date": TODAY, "count": 3, "amount_cents": 300}
    # the offsets the last applied batch ended at are kept with it, for a query without a checkpoint
    from jobs.checkpoint import guard_key, resume_offsets
    assert resume_offsets(redis_client, PREFIX, "orders_today") == '{"orders":{"0":0}}'
    assert redis_client.hget(guard_key(PREFIX, "orders_today"), "query_id") == b"q2"
    assert resume_offsets(redis_client, PREFIX, "other_query") == "earliest"


def test_a_lost_sequence_starts_a_new_epoch_and_history(sink, redis_client):
    """Redis lost its data (the seq key is gone): the next envelope is seq 1 of a new epoch, the old history gone."""
    sink.apply(batch(0), TODAY, [MinuteTotal(TODAY, "10:00", 1, 100)])
    sink.apply(batch(1), TODAY, [MinuteTotal(TODAY, "10:01", 1, 100)])
    old = redis_client.get(epoch_key(PREFIX, ORDERS_TODAY))
    assert [e["seq"] for e in history(redis_client, ORDERS_TODAY)] == [1, 2]
    redis_client.delete(seq_key(PREFIX, ORDERS_TODAY))
    sink.apply(batch(2), TODAY, [MinuteTotal(TODAY, "10:02", 1, 100)])
    new = redis_client.get(epoch_key(PREFIX, ORDERS_TODAY))
    assert new != old
    assert [(e["epoch"], e["seq"]) for e in history(redis_client, ORDERS_TODAY)] == [(new.decode(), 1)]
    assert snapshot(redis_client, ORDERS_TODAY)["epoch"] == new.decode()


def test_the_history_keeps_at_most_its_size_and_age(redis_client):
    sink = OrdersSink(redis_client, PREFIX, history_size=3, history_seconds=600)
    for n in range(5):
        sink.apply(batch(n), TODAY, [MinuteTotal(TODAY, "10:00", 1, 100)])
    assert [e["seq"] for e in history(redis_client, ORDERS_PER_MINUTE)] == [3, 4, 5]
    assert 0 < redis_client.pttl(history_key(PREFIX, ORDERS_PER_MINUTE)) <= 600_000
    # an age of 1 ms: each envelope outlives the ones before it, the stream never holds more than the newest
    short = OrdersSink(redis_client, PREFIX, query="other", history_size=3, history_seconds=0.001)
    short.apply(batch(0), TODAY, [MinuteTotal(TODAY, "10:00", 1, 100)])
    assert eventually(lambda: not redis_client.exists(history_key(PREFIX, ORDERS_PER_MINUTE)), timeout=5,
                      what="the history expired")
    short.apply(batch(1), TODAY, [MinuteTotal(TODAY, "10:00", 1, 100)])
    assert len(history(redis_client, ORDERS_PER_MINUTE)) <= 1
    # no history at all
    none = OrdersSink(redis_client, PREFIX, query="none", history_size=0)
    none.apply(batch(0), TODAY, [MinuteTotal(TODAY, "10:00", 1, 100)])
    assert not redis_client.exists(history_key(PREFIX, ORDERS_PER_MINUTE))


def test_orders_today_carries_when_the_newest_payment_of_its_batch_was_recorded(sink, live, redis_client):
    from jobs.orders import last_recorded

    at = "2026-11-26T07:59:58.125+00:00"
    assert sink.apply(batch(1), TODAY, [MinuteTotal(TODAY, "15:59", 1, 100)], at) is True
    today = [e for e in live(2) if e["channel"] == ORDERS_TODAY][0]
    assert today["data"] == {"date": TODAY, "count": 1, "amount_cents": 100, "last_recorded_at": at}
    assert snapshot(redis_client, ORDERS_TODAY)["data"] == today["data"]
    # a batch without orders of today publishes nothing, so the field never goes stale on a new envelope
    sink.apply(batch(2), TODAY, [MinuteTotal("2026-11-25", "23:59", 1, 5)], "")
    assert live(0) == []
    # the newest recorded_ms among the valid orders of today, in UTC with milliseconds
    rows = [(True, TODAY, "15:59", 100, 1795679998125), (True, TODAY, "15:58", 100, 1795679000000),
            (False, TODAY, None, None, 1795689999999), (True, "2026-11-25", "23:59", 5, 1795689999999)]
    assert last_recorded(rows, TODAY) == "2026-11-26T07:59:58.125+00:00"
    assert last_recorded(rows[2:], TODAY) == ""
