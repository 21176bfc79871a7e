"""Traffic simulator: many synthetic shoppers driving the demo shop through the gateway.

An open model, as real traffic is: sessions arrive as a Poisson process at
``rate`` per second (optionally shaped by a daily curve, by thinning) whether
or not earlier ones have finished, so a slow gateway shows up as latency and
queueing, not as politely reduced load. Each session belongs to one of
``users`` synthetic visitors (a stable User-Agent and client address of its
own), and walks a funnel:

    search (Zipf-popular term) -> view (Zipf over the results, or a popular product)
        -> add to cart -> checkout, which the shop hands to the payment provider,
           whose signed notify pays the order in the order service

with configurable stage probabilities. A share of visitors have accounts and
log in first; a share of sessions are bots crawling product pages. Terms and
product popularity follow Zipf laws over the shop's own vocabulary and
catalogue (producers.shop.catalogue, same seed), so searches find things.
Everything random comes from one seeded generator: the same seed gives the
same sessions (with the daily curve, at the same time of day: the simulator
reads the time from its `clock`).
"""
from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from producers.shop.catalogue import (CATEGORIES, DEFAULT_SEED, DEFAULT_USERS, generate_catalogue, password_for,
                                      user_id)

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.{build}.86 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{build} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E{build}",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.{build}",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.{build}.40 Mobile Safari/537.36",
)
BOTS = ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)")


class Zipf:
    """Draws items with probability proportional to 1 / rank**s."""

    def __init__(self, items: list, s: float = 1.1):
        if not items:
            raise ValueError("Zipf needs at least one item")
        self.items = items
        self.cumulative = list(itertools.accumulate(1 / (rank ** s) for rank in range(1, len(items) + 1)))

    def draw(self, rng: random.Random):
        return self.items[bisect.bisect_left(self.cumulative, rng.random() * self.cumulative[-1])]


def search_vocabulary(seed: int, catalogue_seed: int = DEFAULT_SEED) -> list[str]:
    """Search terms a shopper would type, most popular first (a seeded shuffle).

    Nouns, materials and "material noun" pairs of the shop's vocabulary, kept
    only when some product of the catalogue matches every word, as the shop's
    search requires.
    """
    names = [f"{p.name} {p.category}".lower() for p in generate_catalogue(catalogue_seed)]
    terms = set()
    for _slug, (_name, materials, nouns, _prices) in CATEGORIES.items():
        terms.update(noun.lower() for noun in nouns)
        terms.update(material.lower() for material in materials)
        terms.update(f"{material} {noun}".lower() for material in materials for noun in nouns)
    found = sorted(t for t in terms if any(all(word in name for word in t.split()) for name in names))
    random.Random(seed).shuffle(found)
    return found


def daily_curve(at: datetime) -> float:
    """Relative traffic by time of day: quiet around 04:00, busiest around 20:00 (mean about 1)."""
    hour = at.hour + at.minute / 60
    return 1 + 0.8 * math.cos((hour - 20) / 24 * 2 * math.pi)


@dataclass
class TrafficConfig:
    """How many visitors, how fast sessions arrive, and the funnel's stage probabilities."""

    users: int = 200
    rate: float = 5.0                 # sessions per second (mean)
    duration: float = 60.0            # seconds of arrivals
    seed: int = 7
    logged_in_share: float = 0.3      # visitors with an account who log in
    bot_share: float = 0.05           # sessions that are crawlers
    view_rate: float = 0.8            # search -> view a product
    cart_rate: float = 0.3            # view -> add to cart
    pay_rate: float = 0.6             # cart -> checkout and pay
    think_time: float = 0.2           # mean pause between a session's requests, seconds
    daily_curve: bool = False
    zipf_s: float = 1.1
    catalogue_seed: int = DEFAULT_SEED
    accounts: int = DEFAULT_USERS     # demo users that exist in the shop

    def check(self) -> None:
        for name in ("logged_in_share", "bot_share", "view_rate", "cart_rate", "pay_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.users < 1 or self.rate <= 0 or self.duration <= 0 or self.think_time < 0:
            raise ValueError("users, rate and duration must be positive, think time not negative")


@dataclass
class Visitor:
    """One synthetic visitor: the same browser, address and (maybe) account in all its sessions."""

    number: int
    user_agent: str
    client_ip: str
    account: str | None
    cookies: dict[str, str] = field(default_factory=dict)
    logged_in: bool = False


@dataclass
class TrafficReport:
    """What a run did and what the shop answered, as the simulator saw it."""

    sessions: int = 0
    bot_sessions: int = 0
    requests: Counter = field(default_factory=Counter)      # step -> count
    statuses: Counter = field(default_factory=Counter)      # status class -> count
    searches: Counter = field(default_factory=Counter)      # term -> count
    logins: int = 0
    orders: list[dict] = field(default_factory=list)        # checkouts the shop accepted
    errors: int = 0

    @property
    def ordered_cents(self) -> int:
        return sum(o["total_cents"] for o in self.orders)

    def summary(self) -> str:
        top = ", ".join(f"{t} ({n})" for t, n in self.searches.most_common(3))
        return (f"{self.sessions} sessions ({self.bot_sessions} bots), {sum(self.requests.values())} requests "
                f"{dict(sorted(self.statuses.items()))}, {self.logins} logins, {len(self.orders)} orders checked out "
                f"({self.ordered_cents / 100:.2f} yuan); top searches: {top}")


class TrafficSimulator:
    """Runs `config`'s sessions against the shop at `base_url` (the gateway, in the stack).

    `clock` gives the local time the daily curve is read at (the wall clock by default).
    """

    def __init__(self, base_url: str, config: TrafficConfig, *, max_clients: int = 64,
                 clock: Callable[[], datetime] = datetime.now):
        config.check()
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.rng = random.Random(config.seed)
        catalogue = generate_catalogue(config.catalogue_seed)
        self.products = Zipf([p.id for p in catalogue], config.zipf_s)
        self.terms = Zipf(search_vocabulary(config.seed, config.catalogue_seed), config.zipf_s)
        self.visitors = [self._visitor(n) for n in range(config.users)]
        self.report = TrafficReport()
        self.max_clients = max_clients
        self.client: AsyncHTTPClient | None = None

    def _visitor(self, n: int) -> Visitor:
        build = self.rng.randint(1000, 9999)
        account = (user_id(self.rng.randint(1, self.config.accounts))
                   if self.rng.random() < self.config.logged_in_share else None)
        # Documentation-range addresses (RFC 5737): only ever a header value, never a destination.
        ip = f"{self.rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{n % 254 + 1}"
        return Visitor(n, self.rng.choice(BROWSERS).format(build=build), ip, account)

    async def request(self, visitor: Visitor, step: str, method: str, path: str, body: dict | None = None,
                      user_agent: str | None = None) -> dict | None:
        headers = {"User-Agent": user_agent or visitor.user_agent, "X-Forwarded-For": visitor.client_ip,
                   "Accept": "application/json"}
        if visitor.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())
        payload = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body)
        elif method == "POST":
            payload = b""
        self.report.requests[step] += 1
        try:
            response = await self.client.fetch(HTTPRequest(self.base_url + path, method=method, headers=headers,
                                                            body=payload, request_timeout=30,
                                                            follow_redirects=False))
        except HTTPClientError as exc:
            if exc.code == 599:
                self.report.errors += 1
                self.report.statuses["error"] += 1
                return None
            response = exc.response
            if response is None:
                self.report.statuses[f"{exc.code // 100}xx"] += 1
                return None
        except OSError:
            self.report.errors += 1
            self.report.statuses["error"] += 1
            return None
        self.report.statuses[f"{response.code // 100}xx"] += 1
        for header in response.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(header).items():
                if morsel.value:
                    visitor.cookies[name] = morsel.value
                else:
                    visitor.cookies.pop(name, None)
        if response.code >= 400:
            return None
        try:
            return json.loads(response.body or b"null")
        except ValueError:
            return None

    async def pause(self, rng: random.Random) -> None:
        if self.config.think_time:
            await asyncio.sleep(rng.expovariate(1 / self.config.think_time))

    async def shopper(self, visitor: Visitor, rng: random.Random) -> None:
        """One session through the funnel; stops at the first stage the visitor does not take."""
        cfg = self.config
        if visitor.account and not visitor.logged_in:
            # Claimed before the first await: of a visitor's sessions, the one that starts first logs
            # in, whatever the timing of the replies (keeps a seeded run reproducible).
            visitor.logged_in = True
            if await self.request(visitor, "login", "POST", "/login",
                                  {"user": visitor.account, "password": password_for(visitor.account)}):
                self.report.logins += 1
            await self.pause(rng)
        term = self.terms.draw(rng)
        self.report.searches[term] += 1
        found = await self.request(visitor, "search", "GET", f"/search?q={quote(term)}")
        if rng.random() >= cfg.view_rate:
            return
        await self.pause(rng)
        ids = (found or {}).get("product_ids") or []
        product = Zipf(ids, cfg.zipf_s).draw(rng) if ids else self.products.draw(rng)
        await self.request(visitor, "view", "GET", f"/products/{product}")
        if rng.random() >= cfg.cart_rate:
            return
        await self.pause(rng)
        if await self.request(visitor, "cart", "POST", "/cart/items",
                              {"product_id": product, "qty": rng.choice((1, 1, 1, 2, 3))}) is None:
            return
        if rng.random() >= cfg.pay_rate:
            return
        await self.pause(rng)
        order = await self.request(visitor, "checkout", "POST", "/checkout")
        if order and order.get("order_id"):
            self.report.orders.append({"order_id": order["order_id"], "total_cents": order["total_cents"]})

    async def crawler(self, visitor: Visitor, rng: random.Random) -> None:
        """A bot: a quick burst of product pages, no cookies kept, no funnel."""
        self.report.bot_sessions += 1
        bot = Visitor(visitor.number, rng.choice(BOTS), visitor.client_ip, None)
        for _ in range(rng.randint(3, 10)):
            await self.request(bot, "crawl", "GET", f"/products/{self.products.draw(rng)}")

    async def run(self, on_tick=None) -> TrafficReport:
        """Start sessions as a (possibly non-homogeneous) Poisson process for `duration` seconds."""
        cfg, rng = self.config, self.rng
        self.client = AsyncHTTPClient(force_instance=True, max_clients=self.max_clients)
        peak = cfg.rate * (1.8 if cfg.daily_curve else 1.0)
        tasks: set[asyncio.Task] = set()
        start = time.monotonic()
        at = 0.0
        try:
            while True:
                at += rng.expovariate(peak)
                if at >= cfg.duration:
                    break
                if cfg.daily_curve and rng.random() > cfg.rate * daily_curve(self.clock()) / peak:
                    continue  # thinning: keep an arrival with probability rate(t) / peak
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                visitor = rng.choice(self.visitors)
                # Each session draws from its own generator, seeded in arrival order: the run is
                # reproducible however the sessions' requests interleave.
                session_rng = random.Random(rng.getrandbits(64))
                bot = rng.random() < cfg.bot_share
                session = self.crawler(visitor, session_rng) if bot else self.shopper(visitor, session_rng)
                self.report.sessions += 1
                task = asyncio.create_task(session)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if on_tick is not None:
                    on_tick(at, self.report)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            self.client.close()
            self.client = None
        return self.report
