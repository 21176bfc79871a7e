"""The alert rules and their states, without I/O: what the alerts query evaluates at each tick.

Each rule reads sums of per-minute series over whole minutes (the minute in
progress is not complete, so a window ends where the current minute begins):

* ``orders_drop``: paid orders in the trailing RTDASH_ALERT_ORDERS_WINDOW_MINUTES
  against the same span before it. Its value is the drop share,
  1 - current / previous (negative when orders grew), its baseline the earlier
  window's count. It holds when the drop is at least
  RTDASH_ALERT_ORDERS_DROP_THRESHOLD while the earlier window had at least
  RTDASH_ALERT_ORDERS_MIN_VOLUME orders; an earlier window without orders gives
  value 0 and never holds (no division).
* ``gateway_5xx_share``: the share of non-bot gateway requests answered 5xx
  over the trailing RTDASH_ALERT_5XX_WINDOW_MINUTES; holds when it is above
  RTDASH_ALERT_5XX_THRESHOLD with at least RTDASH_ALERT_5XX_MIN_REQUESTS
  requests in the window (no requests: share 0). No baseline.

States as in Grafana: a rule whose condition holds becomes ``pending``; once
it has held for the rule's pending period (RTDASH_ALERT_ORDERS_PENDING_SECONDS,
RTDASH_ALERT_5XX_PENDING_SECONDS) it is ``firing``, at once when that period
is 0. A firing rule whose condition no longer holds is ``resolved`` and back
to normal; a pending one goes back to normal silently.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

from rtdash.contracts import AlertStateChanged, format_ts, parse_ts
from rtdash.settings import Settings

ORDERS_DROP = "orders_drop"
GATEWAY_5XX_SHARE = "gateway_5xx_share"


@dataclass(frozen=True)
class Window:
    """One series summed over `minutes` whole minutes, ending `back` minutes before the current one begins."""

    series: str
    minutes: int
    back: int = 0

    def fields(self, now: datetime, tz: ZoneInfo) -> list[tuple[str, str]]:
        """The (date, "HH:MM") fields of the window at `now`, dates and minutes in `tz`.

        A window across midnight spans two dates. Distinct fields only: on the
        night a clock goes back, the repeated hour shares its fields.
        """
        end = now.astimezone(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=self.back)
        minutes = (end - timedelta(minutes=m) for m in range(self.minutes, 0, -1))
        fields = ((local.strftime("%Y-%m-%d"), local.strftime("%H:%M")) for local in
                  (minute.astimezone(tz) for minute in minutes))
        return list(dict.fromkeys(fields))


@dataclass(frozen=True)
class Reading:
    """A rule's result at one evaluation."""

    holds: bool            # the alert condition
    value: float
    baseline: float | None
    message: str


class Rule(Protocol):
    name: str
    pending: timedelta

    def windows(self) -> tuple[Window, ...]: ...

    def read(self, sums: Mapping[Window, int]) -> Reading: ...


@dataclass(frozen=True)
class OrdersDrop:
    """Paid orders in the trailing window against the window before it."""

    window_minutes: int
    threshold: float
    min_volume: int
    pending: timedelta
    name: str = ORDERS_DROP

    def windows(self) -> tuple[Window, Window]:
        return Window("orders", self.window_minutes), Window("orders", self.window_minutes, self.window_minutes)

    def read(self, sums: Mapping[Window, int]) -> Reading:
        current_window, previous_window = self.windows()
        current, previous = sums[current_window], sums[previous_window]
        drop = 1 - current / previous if previous > 0 else 0.0
        span = f"{self.window_minutes} min"
        if previous < self.min_volume:
            verdict = f"too few in the earlier window to compare (at least {self.min_volume})"
        else:
            verdict = f"{'down' if drop >= 0 else 'up'} {abs(drop):.0%} (alert at a drop of {self.threshold:.0%})"
        return Reading(holds=previous >= self.min_volume and drop >= self.threshold, value=drop,
                       baseline=float(previous),
                       message=f"{current} paid orders in the last {span}, {previous} in the {span} before: "
                               + verdict)


@dataclass(frozen=True)
class ErrorShare:
    """Share of gateway requests answered 5xx in the trailing window."""

    window_minutes: int
    threshold: float
    min_requests: int
    pending: timedelta
    name: str = GATEWAY_5XX_SHARE

    def windows(self) -> tuple[Window, Window]:
        return Window("errors", self.window_minutes), Window("requests", self.window_minutes)

    def read(self, sums: Mapping[Window, int]) -> Reading:
        errors_window, requests_window = self.windows()
        errors, requests = sums[errors_window], sums[requests_window]
        share = errors / requests if requests > 0 else 0.0
        return Reading(holds=requests >= self.min_requests and share > self.threshold, value=share, baseline=None,
                       message=f"{errors} of {requests} gateway requests answered 5xx in the last "
                               f"{self.window_minutes} min ({share:.1%}; alert above {self.threshold:.1%} "
                               f"with at least {self.min_requests} requests)")


def rules_from(settings: Settings) -> list[Rule]:
    """The rules RTDASH_ALERT_RULES names, with their settings."""
    known = {
        ORDERS_DROP: lambda: OrdersDrop(settings.alert_orders_window_minutes, settings.alert_orders_drop_threshold,
                                        settings.alert_orders_min_volume,
                                        timedelta(seconds=settings.alert_orders_pending_seconds)),
        GATEWAY_5XX_SHARE: lambda: ErrorShare(settings.alert_5xx_window_minutes, settings.alert_5xx_threshold,
                                              settings.alert_5xx_min_requests,
                                              timedelta(seconds=settings.alert_5xx_pending_seconds)),
    }
    names = list(dict.fromkeys(name.strip() for name in settings.alert_rules.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown alert rules {unknown} in RTDASH_ALERT_RULES (known: {', '.join(known)})")
    return [known[name]() for name in names]


@dataclass(frozen=True)
class AlertState:
    """A rule that is pending or firing (a rule in neither state is normal and has none)."""

    state: str             # "pending" or "firing"
    since: datetime        # when it entered that state
    value: float
    baseline: float | None
    message: str

    def record(self) -> dict:
        return {"state": self.state, "since": format_ts(self.since), "value": self.value,
                "baseline": self.baseline, "message": self.message}

    @classmethod
    def from_record(cls, record: Mapping) -> AlertState:
        return cls(record["state"], parse_ts(record["since"]), record["value"], record["baseline"],
                   record["message"])


def evaluate(rules: Sequence[Rule], states: Mapping[str, AlertState], readings: Mapping[str, Reading],
             now: datetime) -> tuple[dict[str, AlertState], list[AlertStateChanged]]:
    """One evaluation at `now`: (the rules pending or firing afterwards, the state changes to announce).

    Grafana's semantics: a condition that holds makes a normal rule pending
    (firing at once with a pending period of 0); a pending rule fires once the
    condition has held for its pending period; a firing rule stays firing
    while the condition holds and is resolved when it no longer does; a
    pending rule whose condition no longer holds is normal again, silently.
    A rule no longer configured is dropped (resolved if it was firing).
    """
    after: dict[str, AlertState] = {}
    changes: list[AlertStateChanged] = []

    def announce(name: str, state: str, since: datetime, reading: Reading) -> None:
        changes.append(AlertStateChanged(rule=name, state=state, since=since, value=reading.value,
                                         baseline=reading.baseline, message=reading.message, evaluated_at=now))

    for rule in rules:
        reading, before = readings[rule.name], states.get(rule.name)
        if reading.holds:
            if before is None:
                state, since = ("firing" if rule.pending <= timedelta(0) else "pending"), now
            elif before.state == "pending" and now - before.since >= rule.pending:
                state, since = "firing", now
            else:
                state, since = before.state, before.since
            after[rule.name] = AlertState(state, since, reading.value, reading.baseline, reading.message)
            if before is None or before.state != state:
                announce(rule.name, state, since, reading)
        elif before is not None and before.state == "firing":
            announce(rule.name, "resolved", now, reading)
    configured = {rule.name for rule in rules}
    for name, before in states.items():
        if name not in configured and before.state == "firing":
            announce(name, "resolved", now, Reading(False, before.value, before.baseline,
                                                    "rule no longer in RTDASH_ALERT_RULES"))
    return after, changes


def channel_data(states: Mapping[str, AlertState]) -> dict:
    """The `alerts` channel's data: the rules pending or firing, by rule name."""
    return {"alerts": [{"rule": name, **states[name].record()} for name in sorted(states)]}


def tick(epoch_seconds: float, interval_seconds: float) -> datetime:
    """The evaluation a wall-clock time belongs to: the time floored to a multiple of the interval."""
    millis, step = int(epoch_seconds * 1000), max(1, round(interval_seconds * 1000))
    return datetime.fromtimestamp((millis - millis % step) / 1000, timezone.utc)
