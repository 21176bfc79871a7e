"""The traffic job's classification: each gateway record as one event, checked, dated and classified.

The rules are those of rtdash/traffic_rules.py (bot, page view, logged-in
user, search term normalisation), here as Spark expressions so that no event
passes through a Python worker; change them there and here together (the
tests compare the two). Days and minutes are those of RTDASH_TIMEZONE, at the
event's `started_at`.

A record is invalid (a dead letter) when it is not JSON, misses a required
field, has a wrong type or a value out of range; an event that starts more
than RTDASH_TRAFFIC_MAX_FUTURE_SECONDS after its record was written to Kafka
is out of range too.
"""
from __future__ import annotations

import math
from functools import reduce

from pyspark.sql import Column, DataFrame, functions as F, types as T

from jobs.dead_letters import reason
from jobs.spark import require_session_zone
from jobs.traffic_sink import GAMMA
from rtdash.contracts import GatewayRequest, spark_schema
from rtdash.settings import Settings
from rtdash.traffic_rules import BOT_WORDS, ORDER_CENTER_PREFIX

# A request longer than a day is not a measurement: out of range.
MAX_TOTAL_MS = 86_400_000.0
MIN_MS = 0.001  # smaller latencies (0 included) share the DDSketch bucket of this one
_LN_GAMMA = math.log(GAMMA)

# Optional text fields the job never reads. Left out of the parse: the JSON reader then skips
# them instead of copying them (the headers map is a large part of a record). A text field
# takes any JSON value, so leaving one out cannot change which records are valid.
UNREAD_FIELDS = frozenset({"headers", "extras", "referrer", "client_ip", "product_id"})


def parse_schema() -> T.StructType:
    """GatewayRequest's schema as the job parses it: maps as raw JSON text, unread text fields left out.

    The job needs only to know that `query` is there; building a map per event
    would be most of the parsing cost.
    """
    schema = spark_schema(GatewayRequest)
    return T.StructType([T.StructField(f.name, T.StringType()) if isinstance(f.dataType, T.MapType) else f
                         for f in schema.fields if f.name not in UNREAD_FIELDS])


def parsed_value() -> Column:
    """A Kafka record's value as the job parses it: a struct of `parse_schema`, null when it is not JSON."""
    return F.from_json(F.col("value").cast("string"), parse_schema())


def invalid_reason(e: Column, written_at: Column, max_future_s: int) -> Column:
    """Why a parsed record is not a usable GatewayRequest, or null when it is.

    "In the future" is measured against the record's own Kafka timestamp (when
    it was written): a request cannot start after its event was written, a
    replay judges a record as its first reading did, and the expression stays
    the same from batch to batch (Spark compiles it once).
    """
    return reason(
        GatewayRequest, e,
        (~e["status"].between(100, 599), "status out of range (100-599)"),
        (F.isnan(e["total_ms"]) | ~e["total_ms"].between(0, MAX_TOTAL_MS),
         f"total_ms out of range (0-{MAX_TOTAL_MS:.0f})"),
        (F.unix_millis(e["started_at"]) > F.unix_millis(written_at) + F.lit(max_future_s * 1000),
         "started_at is in the future"))


def normalised_term(term: Column) -> Column:
    """NFKC, case fold, trim, collapse whitespace (rtdash.traffic_rules.normalise_search_term); null if blank.

    ICU4J, which Spark ships for collations, has both steps as static methods,
    so they run on the JVM through `reflect`: no Python worker on the hot path.
    """
    nfkc = F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"), F.lit("compose"), term, F.lit(True))
    folded = F.call_function("reflect", F.lit("com.ibm.icu.lang.UCharacter"), F.lit("foldCase"), nfkc, F.lit(True))
    tidy = F.regexp_replace(F.regexp_replace(folded, r"(?U)\s+", " "), r"^ | $", "")
    return F.when(term.isNotNull() & (tidy != ""), tidy)


def classify(records: DataFrame, *, settings: Settings) -> DataFrame:
    """Kafka records -> one row per event with its reason (if bad), day, minute and what it counts as.

    Stateless and the same for every micro-batch: the traffic query runs it as
    its streaming plan, so Spark plans and compiles it once; what depends on
    the job's clock (lateness) is added per batch (jobs/traffic_figures.py).
    """
    require_session_zone(records, settings)
    e = F.col("e")
    parsed = records.select("key", "value", "topic", "partition", "offset", "timestamp", parsed_value().alias("e"))
    checked = parsed.withColumn("reason", invalid_reason(e, F.col("timestamp"),
                                                         settings.traffic_max_future_seconds))
    started_ms = F.unix_millis(e["started_at"])
    agent = F.lower(e["user_agent"])
    bot = F.coalesce(e["bot"], F.lit(False)) | F.coalesce(
        reduce(lambda any_, word: any_ | agent.contains(word), BOT_WORDS[1:], agent.contains(BOT_WORDS[0])),
        F.lit(False))
    page_view = (~bot & (e["method"] == "GET") & e["status"].between(200, 399)
                 & ~e["path"].startswith(ORDER_CENTER_PREFIX))
    return checked.select(
        "key", "value", "topic", "partition", "offset", "reason",
        F.date_format(e["started_at"], "yyyy-MM-dd").alias("date"),
        F.date_format(e["started_at"], "HH:mm").alias("minute"),
        started_ms.alias("started_ms"),
        (F.floor(started_ms / 60_000) * 60_000).alias("minute_ms"),
        bot.alias("bot"),
        page_view.alias("page_view"),
        (e["status"] >= 500).alias("error"),
        e["route"].alias("route"),
        F.ceil(F.log(F.greatest(e["total_ms"], F.lit(MIN_MS))) / F.lit(_LN_GAMMA)).cast("int").alias("bucket"),
        e["visitor_id"].alias("visitor_id"),
        F.when(~bot & (e["status"] < 400), e["user_id"]).alias("user_id"),
        F.when(page_view, normalised_term(e["search_term"])).alias("term"),
        e["result_product_ids"].alias("product_ids"))
