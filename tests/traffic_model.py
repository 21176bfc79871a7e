"""Every traffic figure recomputed offline, in plain Python, from a gateway event log.

The ground truth the traffic job is compared with: the same rules
(rtdash.traffic_rules), applied to the same records, with none of the job's
code. Records arrive in phases; the job's clocks (the newest counted
`started_at`, of all partitions for "today", of each partition for lateness)
are taken at the start of each phase, as the job does at each micro-batch, so
a test keeps a phase's events at or before the clocks it starts with when it
wants its late events to be deterministic.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from rtdash.contracts import GatewayRequest, from_json
from rtdash.traffic_rules import is_bot, is_page_view, normalise_search_term


@dataclass
class Expected:
    tz: ZoneInfo
    lateness_s: int
    max_future_s: int = 300
    clock: datetime | None = None
    partition_clocks: dict[int, datetime] = field(default_factory=dict)
    late: int = 0
    invalid: int = 0
    counted: list = field(default_factory=list)  # (GatewayRequest, bot)

    def add_phase(self, values: list[bytes], partitions: list[int] | None = None) -> None:
        """`values` as the job reads them; `partitions` gives each one's Kafka partition (default: all 0)."""
        # late: the event's minute starts more than the lateness before the minute of its partition's clock
        late_before = {partition: clock.replace(second=0, microsecond=0) - timedelta(seconds=self.lateness_s)
                       for partition, clock in self.partition_clocks.items()}
        newest = dict(self.partition_clocks)
        for value, partition in zip(values, partitions or [0] * len(values), strict=True):
            event = self._valid(value)
            if event is None:
                self.invalid += 1
                continue
            bound = late_before.get(partition)
            if bound is not None and event.started_at.replace(second=0, microsecond=0) < bound:
                self.late += 1
                continue
            self.counted.append((event, is_bot(event.user_agent, event.bot)))
            newest[partition] = max(newest.get(partition, event.started_at), event.started_at)
            self.clock = event.started_at if self.clock is None else max(self.clock, event.started_at)
        self.partition_clocks = newest

    def _valid(self, value: bytes) -> GatewayRequest | None:
        try:
            event = from_json(GatewayRequest, value)
        except (ValueError, TypeError):
            return None
        if not 100 <= event.status <= 599 or not 0 <= event.total_ms <= 86_400_000:
            return None
        if event.started_at > datetime.now(timezone.utc) + timedelta(seconds=self.max_future_s):
            return None
        return event

    # --- the figures of "today", the clock's day -------------------------------------------

    def _local(self, at: datetime) -> datetime:
        return at.astimezone(self.tz)

    @property
    def today(self) -> str:
        return self._local(self.clock).date().isoformat()

    def _today_events(self):
        for event, bot in self.counted:
            if self._local(event.started_at).date().isoformat() == self.today:
                yield event, bot, self._local(event.started_at).strftime("%H:%M")

    def traffic_today(self) -> dict:
        page_views, visitors, users, searches, bots = 0, set(), set(), 0, 0
        for event, bot, _ in self._today_events():
            if bot:
                bots += 1
                continue
            if event.status < 400 and event.user_id is not None:
                users.add(event.user_id)
            if is_page_view(event.method, event.status, event.path, bot):
                page_views += 1
                visitors.add(event.visitor_id)
                searches += normalise_search_term(event.search_term) is not None
        return {"date": self.today, "page_views": page_views, "visitors": len(visitors),
                "logged_in_users": len(users), "searches": searches, "bot_requests": bots}

    def traffic_per_minute(self) -> dict:
        minutes: dict[str, dict] = {}
        visitors: dict[str, set] = defaultdict(set)
        for event, bot, minute in self._today_events():
            entry = minutes.setdefault(minute, {"page_views": 0, "visitors": 0, "requests": 0, "errors": 0})
            if bot:
                continue
            entry["requests"] += 1
            entry["errors"] += event.status >= 500
            if is_page_view(event.method, event.status, event.path, bot):
                entry["page_views"] += 1
                visitors[minute].add(event.visitor_id)
        for minute, entry in minutes.items():
            entry["visitors"] = len(visitors[minute])
        return {"date": self.today, "minutes": minutes}

    def _searches(self, since: datetime | None = None, until: datetime | None = None):
        for event, bot, _ in self._today_events() if since is None else self._all_events():
            if since is not None and not since <= event.started_at < until:
                continue
            term = normalise_search_term(event.search_term)
            if is_page_view(event.method, event.status, event.path, bot) and term is not None:
                yield event, term

    def _all_events(self):
        for event, bot in self.counted:
            yield event, bot, None

    @staticmethod
    def _ranked(counts: Counter, top: int, field_name: str) -> list[dict]:
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [{field_name: name, "count": count} for name, count in ranked]

    def search_terms_today(self) -> dict:
        return {"date": self.today,
                "terms": self._ranked(Counter(term for _, term in self._searches()), 20, "term")}

    def search_terms_recent(self) -> dict:
        end = self.clock.replace(second=0, microsecond=0) + timedelta(minutes=1)
        start = end - timedelta(minutes=10)
        counts = Counter(term for _, term in self._searches(start, end))
        return {"window_start": start.astimezone(self.tz).isoformat(),
                "window_end": end.astimezone(self.tz).isoformat(), "terms": self._ranked(counts, 10, "term")}

    def search_products_today(self) -> dict:
        counts: Counter = Counter()
        for event, _ in self._searches():
            counts.update({p for p in (event.result_product_ids or []) if p is not None})
        return {"date": self.today, "products": self._ranked(counts, 20, "product_id")}

    def routes_per_minute(self) -> dict:
        latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
        errors: Counter = Counter()
        for event, bot, minute in self._today_events():
            if bot:
                continue
            latencies[minute, event.route].append(event.total_ms)
            errors[minute, event.route] += event.status >= 500
        minutes: dict[str, dict] = defaultdict(dict)
        for (minute, route), values in latencies.items():
            values.sort()
            minutes[minute][route] = {"requests": len(values), "errors": errors[minute, route],
                                      "p50_ms": nearest_rank(values, 0.5), "p95_ms": nearest_rank(values, 0.95)}
        return {"date": self.today, "minutes": dict(minutes)}


def nearest_rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(1, math.ceil(q * len(sorted_values))) - 1]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)
