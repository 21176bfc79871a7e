"""jobs/alerts_rules.py: readings, Grafana's state machine, windows and ticks, without I/O."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from jobs.alerts_rules import (AlertState, ErrorShare, OrdersDrop, Reading, Window, channel_data, evaluate,
                               rules_from, tick)
from rtdash.settings import Settings

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
DROP = OrdersDrop(window_minutes=60, threshold=0.5, min_volume=20, pending=timedelta(minutes=5))


def drop_reading(current: int, previous: int, rule: OrdersDrop = DROP) -> Reading:
    now_window, before_window = rule.windows()
    return rule.read({now_window: current, before_window: previous})


def share_reading(errors: int, requests: int) -> Reading:
    rule = ErrorShare(window_minutes=5, threshold=0.05, min_requests=20, pending=timedelta(0))
    errors_window, requests_window = rule.windows()
    return rule.read({errors_window: errors, requests_window: requests})


HOLDS = Reading(True, 0.8, 50.0, "down 80%")
CLEAR = Reading(False, 0.0, 50.0, "steady")


# --- readings ---

def test_orders_drop_compares_the_trailing_window_with_the_one_before():
    reading = drop_reading(current=20, previous=50)
    assert reading.holds and reading.value == pytest.approx(0.6) and reading.baseline == 50
    assert "20 paid orders in the last 60 min, 50 in the 60 min before: down 60%" in reading.message
    assert drop_reading(current=25, previous=50).holds  # a drop of exactly the threshold fires
    assert not drop_reading(current=26, previous=50).holds
    grown = drop_reading(current=75, previous=50)
    assert not grown.holds and grown.value == pytest.approx(-0.5) and "up 50%" in grown.message


def test_orders_drop_needs_the_minimum_volume_in_the_earlier_window():
    assert drop_reading(current=0, previous=20).holds
    below = drop_reading(current=0, previous=19)
    assert not below.holds and below.value == pytest.approx(1.0) and "too few" in below.message


def test_orders_drop_after_an_empty_hour_divides_nothing():
    """No orders in the earlier hour (a new shop, a quiet night): value 0, never firing."""
    for current in (0, 5):
        reading = drop_reading(current=current, previous=0)
        assert (reading.holds, reading.value, reading.baseline) == (False, 0.0, 0.0)
    lenient = OrdersDrop(window_minutes=60, threshold=0.5, min_volume=1, pending=timedelta(0))
    assert not drop_reading(0, 0, lenient).holds


def test_5xx_share_over_the_window_with_a_minimum_of_requests():
    reading = share_reading(errors=3, requests=40)
    assert reading.holds and reading.value == pytest.approx(0.075) and reading.baseline is None
    assert "3 of 40 gateway requests answered 5xx in the last 5 min (7.5%" in reading.message
    assert not share_reading(errors=2, requests=40).holds       # 5% is not above 5%
    assert not share_reading(errors=19, requests=19).holds      # too few requests to judge
    idle = share_reading(errors=0, requests=0)                  # no requests: share 0, no division
    assert (idle.holds, idle.value) == (False, 0.0)


# --- Grafana's state machine ---

def run(rule, readings_by_minute: list[Reading], states=None):
    """Evaluate `rule` once a minute from T0; returns the states after each and every change."""
    states, changes, history = dict(states or {}), [], []
    for minute, reading in enumerate(readings_by_minute):
        states, new = evaluate([rule], states, {rule.name: reading}, T0 + minute * MINUTE)
        changes += new
        history.append(states.get(rule.name))
    return history, changes


def test_a_holding_condition_is_pending_then_firing_after_the_pending_period():
    history, changes = run(DROP, [HOLDS] * 7)
    assert [s.state for s in history] == ["pending"] * 5 + ["firing"] * 2
    assert [(c.rule, c.state, c.since, c.evaluated_at) for c in changes] == [
        ("orders_drop", "pending", T0, T0), ("orders_drop", "firing", T0 + 5 * MINUTE, T0 + 5 * MINUTE)]
    assert history[-1] == AlertState("firing", T0 + 5 * MINUTE, 0.8, 50.0, "down 80%")
    assert (changes[1].value, changes[1].baseline, changes[1].message) == (0.8, 50.0, "down 80%")


def test_a_firing_rule_resolves_when_the_condition_no_longer_holds():
    history, changes = run(DROP, [HOLDS] * 6 + [CLEAR, CLEAR])
    assert history[-2:] == [None, None]
    assert [c.state for c in changes] == ["pending", "firing", "resolved"]
    assert (changes[-1].since, changes[-1].message, changes[-1].value) == (T0 + 6 * MINUTE, "steady", 0.0)


def test_a_pending_rule_whose_condition_stops_holding_is_normal_again_silently():
    history, changes = run(DROP, [HOLDS] * 4 + [CLEAR] + [HOLDS] * 2)
    assert [s and s.state for s in history] == ["pending"] * 4 + [None] + ["pending"] * 2
    assert [(c.state, c.since) for c in changes] == [("pending", T0), ("pending", T0 + 5 * MINUTE)]
    assert history[-1].since == T0 + 5 * MINUTE  # the pending period starts over


def test_a_pending_period_of_zero_fires_at_once():
    history, changes = run(OrdersDrop(60, 0.5, 20, timedelta(0)), [HOLDS, HOLDS, CLEAR])
    assert [s and s.state for s in history] == ["firing", "firing", None]
    assert [(c.state, c.since) for c in changes] == [("firing", T0), ("resolved", T0 + 2 * MINUTE)]


def test_firing_keeps_its_since_and_follows_the_value():
    firing = AlertState("firing", T0 - 30 * MINUTE, 0.6, 40.0, "down 60%")
    history, changes = run(DROP, [HOLDS], states={"orders_drop": firing})
    assert changes == [] and history == [AlertState("firing", T0 - 30 * MINUTE, 0.8, 50.0, "down 80%")]


def test_a_rule_taken_out_of_the_settings_resolves_if_it_was_firing():
    states = {"gone": AlertState("firing", T0, 0.3, None, "x"), "quiet": AlertState("pending", T0, 0.3, None, "y")}
    after, changes = evaluate([DROP], states, {"orders_drop": CLEAR}, T0 + MINUTE)
    assert after == {} and [(c.rule, c.state) for c in changes] == [("gone", "resolved")]


def test_channel_data_lists_pending_and_firing_rules_by_name():
    states = {"orders_drop": AlertState("pending", T0, 0.8, 50.0, "down 80%"),
              "gateway_5xx_share": AlertState("firing", T0 - MINUTE, 0.2, None, "20%")}
    assert channel_data(states) == {"alerts": [
        {"rule": "gateway_5xx_share", "state": "firing", "since": "2026-11-26T11:59:00.000Z", "value": 0.2,
         "baseline": None, "message": "20%"},
        {"rule": "orders_drop", "state": "pending", "since": "2026-11-26T12:00:00.000Z", "value": 0.8,
         "baseline": 50.0, "message": "down 80%"}]}
    assert channel_data({}) == {"alerts": []}


# --- windows, ticks, settings ---

def test_windows_are_whole_minutes_before_the_current_one_and_cross_midnight():
    """00:30:20 in Shanghai: the last hour began yesterday at 23:30, the hour before it at 22:30."""
    now = datetime(2026, 11, 26, 16, 30, 20, tzinfo=timezone.utc)  # 2026-11-27 00:30:20 +08:00
    current, previous = Window("orders", 60).fields(now, ZoneInfo("Asia/Shanghai")), \
        Window("orders", 60, back=60).fields(now, ZoneInfo("Asia/Shanghai"))
    assert current == [("2026-11-26", f"23:{m:02d}") for m in range(30, 60)] + \
        [("2026-11-27", f"00:{m:02d}") for m in range(30)]
    assert previous == [("2026-11-26", f"22:{m:02d}") for m in range(30, 60)] + \
        [("2026-11-26", f"23:{m:02d}") for m in range(30)]
    assert Window("errors", 2).fields(now, ZoneInfo("UTC")) == [("2026-11-26", "16:28"), ("2026-11-26", "16:29")]


def test_tick_is_the_wall_clock_floored_to_the_evaluation_interval():
    at = T0.timestamp()
    assert tick(at + 59.9, 60) == T0 and tick(at + 60.2, 60) == T0 + MINUTE
    assert tick(at + 2.7, 0.5) == T0 + timedelta(seconds=2.5)


def test_rules_come_from_the_settings():
    settings = Settings(_env_file=None, alert_rules=" gateway_5xx_share ,orders_drop", alert_orders_pending_seconds=0,
                        alert_5xx_window_minutes=2)
    share_rule, drop_rule = rules_from(settings)  # in the order of the setting
    assert drop_rule.pending == timedelta(0) and share_rule.windows() == (Window("errors", 2), Window("requests", 2))
    assert rules_from(settings.model_copy(update={"alert_rules": ""})) == []
    with pytest.raises(ValueError, match="unknown alert rules"):
        rules_from(settings.model_copy(update={"alert_rules": "orders_drop,disk_full"}))
