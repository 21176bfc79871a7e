"""The fault drill: its comparisons find each kind of difference, and a short drill over every fault ends exact.

The integration test runs `rtdash drill`'s code with short phases: the whole
local stack on free ports under a temporary home, each component SIGKILLed
under load and restarted, the dashboard compared with the order database
after each; then nothing of the stack may be left listening.
"""
from __future__ import annotations

import pytest

from rtdash.settings import Settings
from stack.drill import (FAULTS, PORTS, RECOVERY_TARGET_S, DrillPlan, PhaseResult, default_faults, drill_settings,
                         run_drill)
from stack.drill_checks import DashboardSocket, Figures, Sms, Truth, differences
from stack.drill_report import markdown, rows
from stack.probes import port_open

DAY = "2026-11-30"
TRUTH = Truth(frozenset({"A", "B", "C"}), DAY, 3, 600, {"10:00": (2, 300), "10:01": (1, 300)})
MINUTES = {"10:00": (2, 300), "10:01": (1, 300)}
EXACT = Figures({"date": DAY, "count": 3, "amount_cents": 600}, DAY, MINUTES)
ALL_SENT = Sms(3, 0, frozenset({"A", "B", "C"}))


def test_a_dashboard_equal_to_the_database_has_no_difference():
    assert differences(TRUTH, EXACT, EXACT, {"A", "C"}, ALL_SENT) == dict.fromkeys(
        ("today", "per_minute", "websocket", "lost", "sms"), "")


def test_an_order_counted_twice_shows_in_today_and_in_its_minute():
    twice = Figures({"date": DAY, "count": 4, "amount_cents": 900}, DAY, {"10:00": (2, 300), "10:01": (2, 600)})
    found = differences(TRUTH, twice, twice, set(), ALL_SENT)
    assert found["today"] == "+1 orders, +3.00"
    assert found["per_minute"] == "1 minutes differ (10:01); sum +1 orders, +3.00"
    assert found["websocket"] == ""


def test_minutes_that_do_not_sum_to_the_day_are_a_difference():
    short = Figures(EXACT.today, DAY, {"10:00": (2, 300)})
    assert differences(TRUTH, short, short, set(), ALL_SENT)["per_minute"] == \
        "1 minutes differ (10:01); sum -1 orders, -3.00"


def test_a_websocket_behind_redis_an_acknowledged_order_not_stored_and_a_missing_sms_are_differences():
    behind = Figures({"date": DAY, "count": 2, "amount_cents": 300}, DAY, {"10:00": (2, 300)})
    found = differences(TRUTH, EXACT, behind, {"A", "Z"}, Sms(3, 1, frozenset({"A", "B", "Y"})))
    assert found["websocket"] == "-1 orders, -3.00; 1 minutes differ (10:01)"
    assert found["lost"] == "1 acknowledged, not stored"
    assert found["sms"] == "1 orders without, 1 for no stored order"
    assert differences(TRUTH, EXACT, Figures(), set(), Sms(2, 0))["sms"] == "-1 messages"
    assert differences(TRUTH, EXACT, Figures(), set(), None)["websocket"] == "no figures received"


def test_another_day_or_no_snapshot_is_a_difference():
    yesterday = Figures({"date": "2026-11-29", "count": 3, "amount_cents": 600}, "2026-11-29", MINUTES)
    found = differences(TRUTH, yesterday, yesterday, set(), ALL_SENT)
    assert found["today"] == f"shows 2026-11-29, compared with {DAY}"
    assert found["per_minute"] == f"shows 2026-11-29, not {DAY}"
    assert differences(TRUTH, Figures(), EXACT, set(), ALL_SENT)["today"] == "no snapshot"


def test_the_dashboard_socket_merges_changed_minutes_and_replaces_another_day(tmp_path):
    socket = DashboardSocket(Settings(_env_file=None, home=tmp_path), stop=None)
    socket._take({"channel": "orders.per_minute", "seq": 1,
                  "data": {"date": DAY, "minutes": {"10:00": {"count": 1, "amount_cents": 100}}}})
    socket._take({"channel": "orders.per_minute", "seq": 2,
                  "data": {"date": DAY, "minutes": {"10:01": {"count": 1, "amount_cents": 300}}}})
    socket._take({"channel": "orders.today", "seq": 2, "data": {"date": DAY, "count": 2, "amount_cents": 400}})
    assert socket.figures == Figures({"date": DAY, "count": 2, "amount_cents": 400}, DAY,
                                     {"10:00": (1, 100), "10:01": (1, 300)})
    socket._take({"channel": "orders.per_minute", "seq": 3, "data": {"date": "2026-12-01", "minutes": {}}})
    assert (socket.figures.minutes_day, socket.figures.minutes) == ("2026-12-01", {})


def test_a_phase_is_ok_only_exact_and_back_within_the_target():
    exact = PhaseResult("redis", down_s=1.5, recovery_s=4.25, orders=3, amount_cents=600)
    late = PhaseResult("kafka", down_s=12.0, recovery_s=RECOVERY_TARGET_S + 1)
    wrong = PhaseResult("spark_jobs", down_s=30.0)
    wrong.differences["today"] = "+1 orders, +3.00"
    table = rows([exact, late, wrong, PhaseResult("notifier"), PhaseResult("none")], RECOVERY_TARGET_S)
    assert table[0] == ["redis", "1.5", "4.2", "3", "6.00", "0", "0", "0", "0", "0", "ok"]
    assert [row[-1] for row in table] == ["ok", "over 30 s", "DIFFERENCE", "never back", "not quiescent"]
    assert table[2][5] == "+1 orders, +3.00" and table[3][1:3] == ["never back", "never"]


def test_a_plan_names_known_faults_and_sensible_figures():
    with pytest.raises(ValueError, match="unknown fault shop: choose from order_service"):
        DrillPlan(faults=("kafka", "shop")).check()
    with pytest.raises(ValueError, match="rate and seconds must be positive"):
        DrillPlan(rate=0).check()
    with pytest.raises(ValueError, match=r"duplicate share must be in \[0, 1\)"):
        DrillPlan(duplicate_share=1).check()


def test_the_command_kills_every_component_of_the_orders_mode_by_default():
    from stack.services import local_stack

    microbatch = Settings(_env_file=None, orders_mode="microbatch")
    realtime = Settings(_env_file=None, orders_mode="realtime")
    assert default_faults(microbatch) == FAULTS
    assert default_faults(realtime) == ("order_service", "kafka", "redis", "spark_jobs", "orders_realtime",
                                        "orders_applier", "push_server", "notifier")
    for settings in (microbatch, realtime):   # each fault is a service that mode's stack runs
        assert set(default_faults(settings)) <= {service.name for service in local_stack(settings)}


def test_the_drills_stack_is_its_own_whatever_the_environment_names(tmp_path):
    base = Settings(_env_file=None, redis_url="redis://db.example:6379/0", kafka_bootstrap="kafka.example:9092",
                    database_url="postgresql://orders.example/orders", provider_public_key="/etc/provider.pem")
    settings = drill_settings(tmp_path, base)
    ports = [getattr(settings, name) for name in PORTS]
    assert len(set(ports)) == len(ports) and 8000 not in ports and 9092 not in ports
    assert settings.redis == f"redis://127.0.0.1:{settings.redis_port}/0"
    assert settings.kafka_servers == f"127.0.0.1:{settings.kafka_port}"
    assert settings.database.startswith("sqlite:///") and str(tmp_path) in settings.database
    assert settings.provider_public_key_path == tmp_path / "keys" / "payment_provider_public.pem"


@pytest.mark.integration
@pytest.mark.parametrize("orders_mode", ["microbatch", "realtime"])
def test_a_short_drill_over_every_fault_ends_exact_and_leaves_nothing_running(tmp_path, orders_mode):
    settings = drill_settings(tmp_path / "home", Settings(_env_file=None, kafka_heap="384m", orders_mode=orders_mode))
    plan = DrillPlan(rate=10, duplicate_share=0.1, seconds=3, down=1, traffic_rate=0.5, recovery_timeout=120,
                     faults=default_faults(settings))
    report = run_drill(plan, settings)
    table = markdown(report.results, RECOVERY_TARGET_S) + "\n" + "\n".join(report.summary)
    assert [r.fault for r in report.results] == ["none", *default_faults(settings)], table
    for result in report.results:
        assert result.recovery_s is not None and result.recovery_s <= RECOVERY_TARGET_S, table
        assert not any(result.differences.values()), table
    assert report.results[-1].orders >= plan.rate * plan.seconds * len(report.results) / 2, table  # load flowed
    assert report.ok, table
    assert [name for name in PORTS if port_open("127.0.0.1", getattr(settings, name))] == []
