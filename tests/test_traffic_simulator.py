"""The traffic simulator (producers/traffic.py): Zipf popularity, a shop vocabulary that finds things,
reproducible sessions, arrivals shaped by the daily curve on the simulator's clock."""
from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime

import pytest
import tornado.web
from tornado.testing import AsyncHTTPTestCase, gen_test

from producers.shop.catalogue import generate_catalogue
from producers.traffic import TrafficConfig, TrafficSimulator, Zipf, daily_curve, search_vocabulary


def test_zipf_prefers_low_ranks_in_the_expected_ratio():
    rng = random.Random(1)
    counts = Counter(Zipf(["a", "b", "c", "d"], s=1.0).draw(rng) for _ in range(20_000))
    assert counts["a"] > counts["b"] > counts["c"] > counts["d"]
    assert 1.8 < counts["a"] / counts["b"] < 2.2          # 1/1 : 1/2


def test_every_search_term_matches_some_product():
    names = [f"{p.name} {p.category}".lower() for p in generate_catalogue()]
    for term in search_vocabulary(7):
        assert any(all(word in name for word in term.split()) for name in names), term


def test_daily_curve_is_quiet_in_the_morning_and_busy_in_the_evening():
    assert daily_curve(datetime(2026, 1, 1, 20)) == pytest.approx(1.8)
    assert daily_curve(datetime(2026, 1, 1, 8)) == pytest.approx(0.2)
    assert daily_curve(datetime(2026, 1, 1, 14)) == pytest.approx(1.0)


class FakeShop(tornado.web.RequestHandler):
    """Answers like the demo shop and records what it was asked."""

    def initialize(self, log: list):
        self.log = log

    def prepare(self):
        self.log.append((self.request.method, self.request.path, self.request.headers.get("User-Agent", "")[:12]))

    def get(self, *_):
        if self.request.path == "/search":
            q = self.get_argument("q")
            self.finish({"product_ids": [f"P{len(q):05d}", f"P{len(q) + 1:05d}"]})
        else:
            self.finish({"id": self.request.path.rsplit("/", 1)[-1]})

    def post(self, *_):
        if self.request.path == "/login":
            self.set_cookie("shop_session", json.loads(self.request.body)["user"])
        if self.request.path == "/checkout":
            self.set_status(201)
            self.finish({"order_id": f"S{len(self.log)}", "total_cents": 1999})
            return
        self.finish({"ok": True})


class SimulatorAgainstFakeShop(AsyncHTTPTestCase):
    def get_app(self):
        self.log: list = []
        return tornado.web.Application([(r"/(.*)", FakeShop, dict(log=self.log))])

    async def run_once(self, seed: int, clock=datetime.now, **overrides):
        self.log.clear()
        config = TrafficConfig(**{**dict(users=20, rate=200, duration=0.5, seed=seed, think_time=0, cart_rate=0.5,
                                         pay_rate=0.8, bot_share=0.1), **overrides})
        report = await TrafficSimulator(self.get_url(""), config, clock=clock).run()
        return report, sorted(self.log)

    @gen_test(timeout=30)
    async def test_same_seed_same_sessions_and_a_working_funnel(self):
        first, log_first = await self.run_once(seed=5)
        second, log_second = await self.run_once(seed=5)
        _, log_other = await self.run_once(seed=6)
        assert log_first == log_second and log_first != log_other
        assert first.sessions == second.sessions > 50
        assert first.bot_sessions > 0 and first.requests["crawl"] > 0
        assert first.requests["search"] >= first.requests["view"] >= first.requests["cart"] \
            >= first.requests["checkout"] > 0
        assert len(first.orders) == first.requests["checkout"] and first.statuses["5xx"] == 0
        assert first.logins > 0
        searched = Counter(path for method, path, _ in log_first if path == "/search")
        assert searched["/search"] == first.requests["search"]

    @gen_test(timeout=30)
    async def test_the_daily_curve_thins_arrivals_by_the_simulators_clock(self):
        evening, _ = await self.run_once(seed=5, clock=lambda: datetime(2026, 3, 1, 20, 0), daily_curve=True)
        morning, _ = await self.run_once(seed=5, clock=lambda: datetime(2026, 3, 1, 8, 0), daily_curve=True)
        again, _ = await self.run_once(seed=5, clock=lambda: datetime(2026, 3, 1, 8, 0), daily_curve=True)
        # At 20:00 the curve is at its peak (every arrival kept), at 08:00 a ninth of it (0.2 / 1.8).
        assert morning.sessions == again.sessions
        assert evening.sessions > 50
        assert 0.05 < morning.sessions / evening.sessions < 0.2
