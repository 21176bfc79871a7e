"""The orders job's pure stages on small static DataFrames: transform, minute_totals, dead_letters."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import partial

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

import kafka_records
from jobs.dead_letters import dead_letters
from jobs.orders import TOTALS_COLUMNS, minute_totals, transform
from jobs.orders_sink import MinuteTotal

T0 = datetime(2026, 11, 26, 15, 59, 30, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 26, 16, 1, 5, tzinfo=timezone.utc)
records = partial(kafka_records.records, topic="orders", written_at=T0)


def order(order_id: str, cents: int, paid_at: datetime = T0) -> bytes:
    return kafka_records.order(order_id, cents, paid_at)


def test_transform_keeps_one_row_per_order_and_flags_bad_records(spark, job_settings):
    values = [order("A", 1000), order("A", 1000), order("B", 250, LATER), b"not json at all",
              order("C", -5), order("D", 700).replace(b'"trade_no":"TD",', b""), b"not json at all"]
    out = transform(records(spark, values), settings=job_settings)
    assertDataFrameEqual(
        out.select("valid", "reason", "order_id", "amount_cents", "date", "minute"),
        [Row(valid=True, reason=None, order_id="A", amount_cents=1000, date="2026-11-26", minute="15:59"),
         Row(valid=True, reason=None, order_id="B", amount_cents=250, date="2026-11-26", minute="16:01"),
         # identical bad records are two dead letters, never merged
         Row(valid=False, reason="not a JSON OrderPaid object", order_id=None, amount_cents=None, date=None,
             minute=None),
         Row(valid=False, reason="not a JSON OrderPaid object", order_id=None, amount_cents=None, date=None,
             minute=None),
         Row(valid=False, reason="amount_cents must be positive", order_id="C", amount_cents=-5,
             date="2026-11-26", minute="15:59"),
         Row(valid=False, reason="missing or mistyped field trade_no", order_id="D", amount_cents=700,
             date="2026-11-26", minute="15:59")])


def test_day_and_minute_are_those_of_the_configured_zone(spark, job_settings):
    shanghai = job_settings.model_copy(update={"timezone": "Asia/Shanghai"})
    evening_utc = records(spark, [order("A", 1000, datetime(2026, 11, 26, 17, 0, tzinfo=timezone.utc))])
    with pytest.raises(ValueError, match="session.timeZone"):  # a session in another zone would misdate
        transform(evening_utc, settings=shanghai)
    spark.conf.set("spark.sql.session.timeZone", "Asia/Shanghai")
    try:
        out = transform(evening_utc, settings=shanghai)
        assertDataFrameEqual(out.select("date", "minute"), [Row(date="2026-11-27", minute="01:00")])
    finally:
        spark.conf.set("spark.sql.session.timeZone", job_settings.timezone)


def test_minute_totals_and_dead_letters(spark, job_settings):
    values = [order("A", 1000), order("B", 250), order("C", 99, LATER), b"{}", order("X", -7)]
    out = transform(records(spark, values), settings=job_settings)
    minutes, invalid = minute_totals(out.select(*TOTALS_COLUMNS).collect())
    assert sorted(minutes, key=lambda m: m.minute) == [MinuteTotal("2026-11-26", "15:59", 2, 1250),
                                                       MinuteTotal("2026-11-26", "16:01", 1, 99)]
    assert invalid == 2
    letters = dead_letters(out).collect()
    assert sorted((r.value, {h.key: bytes(h.value) for h in r.headers}) for r in letters) == [
        (order("X", -7), {"rtdash.error": b"amount_cents must be positive", "rtdash.source": b"orders:0:4"}),
        (b"{}", {"rtdash.error": b"not a JSON OrderPaid object", "rtdash.source": b"orders:0:3"})]
    assert {r.key for r in letters} == {b"k"}
