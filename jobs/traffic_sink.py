"""The traffic job's Redis sink: a batch's figures merged into the day's, once, and published.

Per batch: the visitor and user ids go into HyperLogLogs first (PFADD is
idempotent, so this part needs no guard), then one Lua script
(jobs/lua/traffic.lua) applies everything that counts under the guard of
jobs/checkpoint.py, evicts what event time has left behind, and publishes the
channels of "today" (the day of the job's clock), all or nothing.

Keys (prefix p = RTDASH_REDIS_PREFIX, D = YYYY-MM-DD, M = HH:MM, both in
RTDASH_TIMEZONE):

    p:traffic:clock                    newest started_at counted (epoch ms): the job's event-time clock
    p:traffic:clocks                   hash partition -> newest started_at counted from it (lateness)
    p:traffic:late                     events that came later than the lateness allows (a counter)
    p:traffic:evict                    zset: key -> event time (ms) after which the key is deleted
    p:traffic:day:D                    hash: page_views, searches, bot_requests
    p:traffic:visitors:D               HLL of visitor ids (page views)
    p:traffic:users:D                  HLL of logged-in user ids
    p:traffic:minute:D:<figure>        hash M -> page_views | visitors | requests | errors
    p:traffic:visitors:D:M             HLL of the minute's visitors     (minute detail)
    p:search:terms:D                   zset term -> -count (ZRANGE gives count desc, then term asc)
    p:search:terms:D:M                 zset term -> -count of the minute  (minute detail)
    p:search:products:D                zset product id -> -count
    p:routes:count:D                   hash "M|route|requests", "M|route|errors" -> count
    p:routes:latency:D:M:route         hash DDSketch bucket -> count   (minute detail)
    p:routes:minute:D                  hash "M|route" -> {"requests","errors","p50_ms","p95_ms"} JSON

Minute detail is evicted once the day and the recent-terms window are over and
the lateness has passed, in event time; the day's figures after
RTDASH_TRAFFIC_KEEP_DAYS days. Every key also expires (wall clock) that many
days after its last change, for a job that stopped. The alerts job reads
`p:traffic:minute:D:requests` and `:errors`.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis

from jobs.checkpoint import Batch, guard_key, load_script
from rtdash.channels import TRAFFIC_CHANNELS, stream_keys
from rtdash.settings import Settings

# DDSketch: bucket i holds latencies in (GAMMA^(i-1), GAMMA^i] (the job computes i); a percentile
# is read as the bucket's representative 2 GAMMA^i / (GAMMA + 1), within ALPHA of any value in it.
ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
RECENT_MINUTES = 10
TOP_TODAY = 20
TOP_RECENT = 10


@dataclass(frozen=True)
class Applied:
    applied: bool
    counted: int   # events counted in the figures (bots included)
    late: int


class TrafficSink:
    """Merges batches of one traffic query into Redis; safe to call again with a batch it has seen."""

    def __init__(self, client: redis.Redis, settings: Settings, query: str):
        self.client = client
        self.settings = settings
        self.prefix = settings.redis_prefix
        self._script = client.register_script(load_script("traffic"))
        self._keys = [guard_key(self.prefix, query)] + [
            key for channel in TRAFFIC_CHANNELS for key in stream_keys(self.prefix, channel)]

    def clock_ms(self) -> int | None:
        value = self.client.get(f"{self.prefix}:traffic:clock")
        return int(value) if value is not None else None

    def partition_clocks(self) -> dict[int, int]:
        """Per Kafka partition, the newest started_at counted from it (epoch ms): what lateness is judged by."""
        return {int(partition): int(ms) for partition, ms in
                self.client.hgetall(f"{self.prefix}:traffic:clocks").items()}

    def apply(self, batch: Batch, rows: list[dict]) -> Applied:
        """Merge one batch's figure rows (jobs.traffic.FIGURE_COLUMNS as dicts)."""
        by_kind: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_kind[row["kind"]].append(row)
        latest = max((r["latest_ms"] for r in by_kind["minute"] if r["latest_ms"] is not None), default=None)
        old_clock = self.clock_ms()
        clock = max(c for c in (old_clock, latest, 0) if c is not None)
        old_clocks = self.partition_clocks()
        partition_clocks = {r["name"]: str(max(r["latest_ms"], old_clocks.get(int(r["name"]), 0)))
                            for r in by_kind["clock"] if r["latest_ms"] is not None}
        self._add_unique(by_kind["visitor"], by_kind["user"])
        dates = {r["date"] for kind in ("minute", "route", "term", "product", "late", "visitor", "user")
                 for r in by_kind[kind]}
        payload = {
            "clock": str(clock),
            "partition_clocks": partition_clocks,
            "days": {day: self._lifetimes(day) for day in dates},
            "minutes": [[r["date"], r["minute"], r["n"], r["errors"], r["page_views"], r["searches"], r["bots"]]
                        for r in by_kind["minute"]],
            "routes": [[r["date"], r["minute"], r["name"], r["bucket"], r["n"], r["errors"]]
                       for r in by_kind["route"]],
            "visitor_minutes": sorted({(r["date"], r["minute"]) for r in by_kind["visitor"]}),
            "terms": [[r["date"], r["minute"], r["name"], r["n"]] for r in by_kind["term"]],
            "products": [[r["date"], r["name"], r["n"]] for r in by_kind["product"]],
            "late": sum(r["n"] for r in by_kind["late"]),
        }
        payload.update(self._today(clock) if clock else {"today": ""})
        applied = self._script(keys=self._keys, args=[
            batch.query_id, str(batch.batch_id), batch.offsets, self.prefix, self.settings.traffic_keep_days * 86400,
            json.dumps(payload, separators=(",", ":"), ensure_ascii=False), repr(GAMMA), *TRAFFIC_CHANNELS,
            self.settings.push_history_size, self.settings.push_history_seconds])
        counted = sum(r["n"] + r["bots"] for r in by_kind["minute"])
        return Applied(bool(applied), counted, payload["late"])

    def _add_unique(self, visitors: list[dict], users: list[dict]) -> None:
        """PFADD the batch's distinct visitors (per minute and per day) and users (per day)."""
        members: dict[str, set[str]] = defaultdict(set)
        for r in visitors:
            members[f"{self.prefix}:traffic:visitors:{r['date']}:{r['minute']}"].add(r["name"])
            members[f"{self.prefix}:traffic:visitors:{r['date']}"].add(r["name"])
        for r in users:
            members[f"{self.prefix}:traffic:users:{r['date']}"].add(r["name"])
        if not members:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, ids in members.items():
            ids = list(ids)
            for start in range(0, len(ids), 10_000):
                pipe.pfadd(key, *ids[start:start + 10_000])
        pipe.execute()

    def _lifetimes(self, day: str) -> list[str]:
        """Event times (ms) until which a day's minute detail and its figures are kept."""
        start = datetime.fromisoformat(day).replace(tzinfo=self.settings.tz)
        end = start + timedelta(days=1)
        detail = end + timedelta(minutes=RECENT_MINUTES, seconds=self.settings.traffic_lateness_seconds)
        figures = end + timedelta(days=self.settings.traffic_keep_days)
        return [str(int(detail.timestamp() * 1000)), str(int(figures.timestamp() * 1000))]

    def _today(self, clock_ms: int) -> dict:
        """Today (the clock's day) and the recent-terms window: the ten minutes up to the clock's minute."""
        now = datetime.fromtimestamp(clock_ms // 60_000 * 60, timezone.utc)  # the clock's minute, in UTC
        end = now + timedelta(minutes=1)
        start = end - timedelta(minutes=RECENT_MINUTES)
        window = [(start + timedelta(minutes=i)).astimezone(self.settings.tz) for i in range(RECENT_MINUTES)]
        tz = self.settings.tz
        return {"today": now.astimezone(tz).date().isoformat(),
                "window_start": start.astimezone(tz).isoformat(), "window_end": end.astimezone(tz).isoformat(),
                "window": [[m.date().isoformat(), m.strftime("%H:%M")] for m in window]}
