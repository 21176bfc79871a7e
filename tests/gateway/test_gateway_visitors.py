"""Believable visitor counts: whom the gateway trusts for X-Forwarded-For, in the local stack and by default.

The traffic simulator gives each synthetic visitor an address of its own in
X-Forwarded-For; every request reaches the local stack's gateway from
127.0.0.1. The local stack's gateway trusts loopback (unless
RTDASH_TRUSTED_PROXIES is set), so each synthetic visitor is one visitor id; a
gateway with the default settings trusts nobody.
"""
from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from datetime import datetime, timezone

import pytest

from producers.gateway.events import EventBuilder, VisitorIds
from producers.traffic import TrafficConfig, TrafficSimulator
from rtdash.settings import Settings
from stack.services import local_stack
from rtdash.traffic_rules import is_bot


@pytest.fixture
def clean_env(monkeypatch):
    """No RTDASH_* variable of the environment running the tests."""
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def service_env(settings: Settings, name: str) -> dict[str, str]:
    return next(s for s in local_stack(settings) if s.name == name).env


def gateway_settings_from(env: dict[str, str], monkeypatch) -> Settings:
    """The settings the gateway process builds from the environment the stack gives it."""
    for key, value in env.items():
        if key.startswith("RTDASH_"):
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def test_default_settings_trust_nobody(clean_env, tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, visitor_secret="s")
    assert settings.trusted_proxies == []
    assert not EventBuilder.from_settings(settings).trusted.trusts("127.0.0.1")


def test_the_local_stacks_gateway_trusts_the_local_simulator(clean_env, tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, visitor_secret="s")
    env = service_env(settings, "gateway")
    assert env["RTDASH_TRUSTED_PROXIES"] == "127.0.0.1,::1"
    assert service_env(settings, "shop")["RTDASH_TRUSTED_PROXIES"] == ""      # only the gateway's
    assert settings.trusted_proxies == []                                      # the caller's untouched
    trusted = EventBuilder.from_settings(gateway_settings_from(env, clean_env)).trusted
    assert trusted.trusts("127.0.0.1") and not trusted.trusts("10.0.0.1")
    assert trusted.client_ip("127.0.0.1", "203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize("configured", ["10.0.0.0/8", ""])
def test_the_local_stack_keeps_trusted_proxies_the_user_set(clean_env, tmp_path, configured):
    clean_env.setenv("RTDASH_TRUSTED_PROXIES", configured)
    settings = Settings(_env_file=None, home=tmp_path)
    assert service_env(settings, "gateway")["RTDASH_TRUSTED_PROXIES"] == configured


def test_the_demos_synthetic_visitors_are_distinct_visitor_ids():
    simulator = TrafficSimulator("http://127.0.0.1:1", TrafficConfig(users=300, seed=11))   # `rtdash demo`'s
    ids = VisitorIds(b"secret", timezone.utc)
    at = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    assert len({ids.visitor_id(v.client_ip, v.user_agent, at) for v in simulator.visitors}) == 300


def run_simulator(url: str) -> TrafficSimulator:
    config = TrafficConfig(users=40, rate=40, duration=1.5, seed=5, think_time=0.01, bot_share=0.25,
                           logged_in_share=0.5, view_rate=0.8)
    simulator = TrafficSimulator(url, config)
    report = asyncio.run(simulator.run())
    assert report.errors == 0 and report.bot_sessions >= 4
    return simulator


def test_simulated_visitors_through_a_gateway_trusting_loopback(make_gateway):
    gw = make_gateway(trusted_proxies="127.0.0.1,::1", gateway_store_client_ip=True)
    simulator = run_simulator(gw.url)
    events = gw.events(sum(simulator.report.requests.values()))
    shoppers = [e for e in events if not e.bot]
    crawlers = [e for e in events if e.bot]
    assert all(is_bot(e.user_agent) for e in crawlers) and crawlers
    # Each shopper's event names its synthetic visitor, and each visitor is one visitor id.
    by_address = {(v.client_ip, v.user_agent): v.number for v in simulator.visitors}
    assert all((e.client_ip, e.user_agent) in by_address for e in shoppers)
    ids_of = defaultdict(set)
    for e in shoppers:
        ids_of[by_address[e.client_ip, e.user_agent]].add(e.visitor_id)
    assert len(ids_of) >= 15
    assert all(len(ids) == 1 for ids in ids_of.values())
    assert len({e.visitor_id for e in shoppers}) == len(ids_of)
    # Crawler sessions come from the addresses of the visitors they were drawn for, not from one place.
    assert len({e.visitor_id for e in crawlers}) > 3
    assert not any(e.client_ip == "127.0.0.1" for e in events)


def test_simulated_visitors_collapse_through_a_gateway_trusting_nobody(make_gateway):
    gw = make_gateway(gateway_store_client_ip=True)
    simulator = run_simulator(gw.url)
    events = gw.events(sum(simulator.report.requests.values()))
    assert {e.client_ip for e in events} == {"127.0.0.1"}
    assert len({e.visitor_id for e in events if e.bot}) <= 3     # one per crawler User-Agent
