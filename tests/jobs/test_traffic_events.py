"""jobs/traffic_events.py on small static DataFrames: search terms, page views, bots, users, bad records."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.traffic_events import classify, normalised_term
from kafka_records import gateway_request, records
from rtdash.traffic_rules import normalise_search_term

AT = datetime(2026, 3, 1, 10, 0, 5, tzinfo=timezone.utc)
request = partial(gateway_request, started_at=AT)
gateway_records = partial(records, topic="gateway", written_at=AT + timedelta(minutes=2))


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
    out = classify(gateway_records(spark, values), settings=job_settings)
    assertDataFrameEqual(out.select("offset", "bot", "page_view", "error", "user_id"), [
        (0, False, True, False, None), (1, True, False, False, None), (2, True, False, False, None),
        (3, True, False, False, None), (4, False, False, False, "u1"), (5, False, True, False, None),
        (6, False, False, False, None), (7, False, False, False, None), (8, False, False, True, None)],
        checkRowOrder=False)


def test_an_event_starting_after_its_record_was_written_is_out_of_range(spark, job_settings):
    written = AT + timedelta(minutes=2)
    limit = timedelta(seconds=job_settings.traffic_max_future_seconds)
    values = [request(started_at=written + limit), request(started_at=written + limit + timedelta(seconds=1))]
    out = classify(gateway_records(spark, values, written_at=written), settings=job_settings)
    assert [r.reason for r in out.orderBy("offset").collect()] == [None, "started_at is in the future"]
