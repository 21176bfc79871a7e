"""A believable gateway event log for the traffic benchmarks, without the HTTP.

`ShopperLog` writes the GatewayRequest events the gateway would write for a
day of shop traffic, sessions at a time:

* shoppers (95% of sessions) from a pool of visitors (stable User-Agent; a
  share logged in, who POST /login first and carry a user id after it): a
  landing page, then one to three rounds of search (a Zipf-popular term of the
  shop's vocabulary, sometimes typed with other case or spacing, sometimes a
  long-tail term; results: up to 20 product ids of the catalogue matching it)
  -> product view (Zipf over the results) -> add to cart -> checkout, whose
  payment notify comes from the payment provider through the order-center
  route; a few 404s (stale links), a few 5xx (an upstream failing);
* crawlers (5% of sessions): 5-30 product and category pages with a bot
  User-Agent and the gateway's bot flag.

Headers, referrer and query are filled as the gateway fills them (redacted
cookie, typical browser headers), so the records have the size of real ones
(about 700 bytes). Event times come from the session's start plus think times;
the caller decides the starts (a day's curve for the throughput bench, "now"
for the freshness bench) and turns the events it keeps into records with
`record`. `counts`, `viewers` and `users` tally what the
dashboard must show, by the rules of rtdash.traffic_rules, for the bench to
check the figures with.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

from producers.shop.catalogue import ADJECTIVES, generate_catalogue
from producers.traffic import BOTS, BROWSERS, Zipf, search_vocabulary
from rtdash.contracts import GatewayRequest, to_json
from rtdash.payments import NOTIFY_PATH
from rtdash.traffic_rules import is_bot, is_page_view, normalise_search_term

PROVIDER_AGENT = "rtdash-payment-provider/1.0"
BROWSER_HEADERS = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                   "Accept-Encoding": "gzip, deflate, br", "Accept-Language": "en-US,en;q=0.9,zh-CN;q=0.8",
                   "Connection": "keep-alive", "Cookie": "[redacted]"}


class ShopperLog:
    """Sessions of shoppers and crawlers as gateway events; the same seed gives the same log."""

    def __init__(self, seed: int = 7, visitors: int = 100_000, users: int = 20_000, logged_in_share: float = 0.3,
                 bot_share: float = 0.05, host: str = "shop.example:8000"):
        self.rng = random.Random(seed)
        rng = self.rng
        catalogue = generate_catalogue()
        self.products = Zipf([p.id for p in catalogue], 1.1)
        names = [(p.id, f"{p.name} {p.category}".lower()) for p in catalogue]
        vocabulary = search_vocabulary(seed)
        self.terms = Zipf(vocabulary, 1.1)
        self.results = {t: [pid for pid, name in names if all(w in name for w in t.split())][:20]
                        for t in vocabulary}
        self.tail = [f"{a.lower()} {t}" for a in ADJECTIVES for t in vocabulary]  # rare, mostly no results
        self.visitors = []
        for n in range(visitors):
            agent = rng.choice(BROWSERS).format(build=rng.randint(1000, 9999))
            user = f"user{rng.randrange(users):05d}" if rng.random() < logged_in_share else None
            self.visitors.append((f"{rng.getrandbits(128):032x}", agent, user))
        self.crawlers = [(f"{rng.getrandbits(128):032x}", agent) for agent in BOTS for _ in range(20)]
        self.bot_share = bot_share
        self.host = host
        self.counts: Counter[str] = Counter()  # requests, page_views, searches, bot_requests, errors
        self.viewers: set[str] = set()          # visitor ids of page views
        self.users: set[str] = set()            # logged-in users of non-bot requests answered below 400

    # --- one request -----------------------------------------------------------------------

    def record(self, event: GatewayRequest) -> tuple[bytes, bytes]:
        """The Kafka record (key, value) of `event`, tallied in `counts`, `viewers` and `users`."""
        self._count(event)
        return event.key(), to_json(event)

    def _event(self, at: datetime, method: str, path: str, status: int, visitor: str, agent: str,
               user: str | None = None, *, route: str = "shop", term: str | None = None,
               results: list[str] | None = None, product: str | None = None, referrer: str | None = None,
               bot: bool = False) -> GatewayRequest:
        rng = self.rng
        total = round(rng.lognormvariate(2.6 if status < 500 else 4.5, 0.7), 3)
        gateway = round(min(total, 0.25 + rng.random() * 0.5), 3)
        headers = {"Host": self.host, "User-Agent": agent}
        if not bot:
            headers.update(BROWSER_HEADERS)
        if referrer:
            headers["Referer"] = referrer
        return GatewayRequest(
            request_id=f"{rng.getrandbits(128):032x}", started_at=at, method=method, path=path, route=route,
            query={"q": [term]} if term is not None else {}, status=status,
            request_bytes=0 if method == "GET" else rng.randint(80, 900),
            response_bytes=rng.randint(300, 40_000) if status < 400 else rng.randint(40, 300),
            total_ms=total, gateway_ms=gateway, visitor_id=visitor, source="proxy",
            upstream_ms=round(total - gateway, 3), user_id=user,
            user_agent=agent, referrer=referrer, headers=headers, search_term=term,
            result_product_ids=results, product_id=product, bot=True if bot else None)

    def _count(self, e: GatewayRequest) -> None:
        c = self.counts
        c["requests"] += 1
        bot = is_bot(e.user_agent, e.bot)
        if bot:
            c["bot_requests"] += 1
            return
        if e.status >= 500:
            c["errors"] += 1
        if e.user_id is not None and e.status < 400:
            self.users.add(e.user_id)
        if is_page_view(e.method, e.status, e.path, bot):
            c["page_views"] += 1
            self.viewers.add(e.visitor_id)
            if normalise_search_term(e.search_term):
                c["searches"] += 1

    def _status(self, ok: int = 200) -> int:
        r = self.rng.random()
        return 503 if r < 0.004 else 502 if r < 0.006 else ok

    # --- sessions ---------------------------------------------------------------------------

    def session(self, start: datetime) -> Iterator[tuple[datetime, GatewayRequest]]:
        """One session's events (with their times), in time order, starting at `start`."""
        rng = self.rng
        if rng.random() < self.bot_share:
            yield from self._crawl(start)
            return
        visitor, agent, user = rng.choice(self.visitors)
        at = start
        logged_in = None

        def later() -> datetime:
            return at + timedelta(seconds=rng.expovariate(1 / 12))

        base = f"https://{self.host}"
        if rng.random() < 0.4:
            yield at, self._event(at, "GET", "/", self._status(), visitor, agent)
            at = later()
        if user is not None:
            yield at, self._event(at, "POST", "/login", 200, visitor, agent, user)
            logged_in = user
            at = later()
        for _round in range(rng.choice((1, 1, 1, 2, 2, 3))):
            r = rng.random()
            if r < 0.15:
                term = rng.choice(self.tail)
                results = []
            else:
                term = self.terms.draw(rng)
                results = self.results[term]
                if r < 0.25:  # typed differently: the job's normalising makes it the same term
                    term = rng.choice((term.title(), f" {term}", term.upper(), term.replace(" ", "  ")))
            status = self._status()
            yield at, self._event(at, "GET", "/search", status, visitor, agent, logged_in, term=term,
                                   results=results if status == 200 else None, referrer=base + "/")
            at = later()
            if rng.random() < 0.02:
                yield at, self._event(at, "GET", "/products/P99999", 404, visitor, agent, logged_in)
                at = later()
            if not results or rng.random() > 0.8:
                continue
            product = Zipf(results, 1.1).draw(rng) if len(results) > 1 else results[0]
            yield at, self._event(at, "GET", f"/products/{product}", self._status(), visitor, agent, logged_in,
                                   product=product, referrer=f"{base}/search")
            at = later()
            if rng.random() > 0.3:
                continue
            yield at, self._event(at, "POST", "/cart/items", self._status(), visitor, agent, logged_in)
            at = later()
            yield at, self._event(at, "GET", "/cart", self._status(), visitor, agent, logged_in)
            at = later()
            if rng.random() > 0.6:
                continue
            yield at, self._event(at, "POST", "/checkout", self._status(), visitor, agent, logged_in)
            at = at + timedelta(seconds=rng.uniform(0.5, 3))
            provider = self.crawlers[0][0][::-1]  # the provider's own visitor id
            yield at, self._event(at, "POST", NOTIFY_PATH, 200, provider, PROVIDER_AGENT, route="order_center")
            at = later()

    def _crawl(self, start: datetime) -> Iterator[tuple[datetime, GatewayRequest]]:
        rng = self.rng
        visitor, agent = rng.choice(self.crawlers)
        at = start
        for _ in range(rng.randint(5, 30)):
            path = "/categories" if rng.random() < 0.2 else f"/products/{self.products.draw(rng)}"
            yield at, self._event(at, "GET", path, self._status(), visitor, agent, bot=True)
            at += timedelta(seconds=rng.uniform(0.5, 3))
