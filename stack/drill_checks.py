"""What the fault drill compares: the order database against Redis, a dashboard's WebSocket and the SMS sent.

Ground truth is the order database: an order is in it once the order service
answered ``success`` for its notify. For the day the dashboard shows, its
``orders.today`` snapshot must hold exactly the database's count and amount,
its ``orders.per_minute`` snapshot exactly the database's orders of each
minute (so the minutes sum to the day), a dashboard connected over WebSocket
since the start (reconnecting by itself) the same figures as Redis, and the
SMS gateway one message per stored order (the notifier's idempotency key is
the order id). No order may be acknowledged to the payer and missing from the
database. An order counted twice would show as a count above the database's.

`differences` says, per check, how the dashboard differs ("" when it does not).
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

import redis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from producers.order_service.store import epoch_ms, orders
from push_server.tokens import Tokens
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, snapshot_key
from rtdash.database import make_engine
from rtdash.payments import format_amount
from rtdash.retry import async_retrying
from rtdash.settings import Settings

from .drill_load import Payer

log = logging.getLogger("rtdash.drill")

CHECKS = ("today", "per_minute", "websocket", "lost", "sms")
Minutes = dict[str, tuple[int, int]]   # "HH:MM" -> (count, amount_cents)


@dataclass(frozen=True)
class Truth:
    """The order database at one moment: every stored order id, and the figures of one day."""

    ids: frozenset[str]
    day: str
    count: int
    amount_cents: int
    minutes: Minutes


def read_truth(engine: Engine, day: str, tz: tzinfo) -> Truth:
    """The stored paid orders; the day's count, amount and minutes (paid_at in `tz`, as the job counts)."""
    start = datetime.combine(date.fromisoformat(day), time.min, tz)
    first, last = epoch_ms(start), epoch_ms(start + timedelta(days=1))
    with engine.connect() as conn:
        rows = conn.execute(select(orders.c.order_id, orders.c.amount_cents, orders.c.paid_at_ms)).all()
    minutes: dict[str, list[int]] = {}
    for _order, cents, paid_ms in rows:
        if first <= paid_ms < last:
            figures = minutes.setdefault(datetime.fromtimestamp(paid_ms / 1000, tz).strftime("%H:%M"), [0, 0])
            figures[0] += 1
            figures[1] += cents
    return Truth(frozenset(r[0] for r in rows), day, sum(c for c, _ in minutes.values()),
                 sum(a for _, a in minutes.values()), {m: (c, a) for m, (c, a) in minutes.items()})


@dataclass(frozen=True)
class Figures:
    """The orders channels as one reader sees them: today's data and the day's minutes."""

    today: dict | None = None                 # orders.today data: date, count, amount_cents
    minutes_day: str | None = None            # orders.per_minute's date
    minutes: Minutes = field(default_factory=dict)


def read_redis(client: redis.Redis, prefix: str) -> Figures:
    """The `orders.today` and `orders.per_minute` snapshots the jobs keep in Redis."""
    today_raw, minutes_raw = client.mget(snapshot_key(prefix, ORDERS_TODAY), snapshot_key(prefix, ORDERS_PER_MINUTE))
    today = json.loads(today_raw)["data"] if today_raw else None
    per_minute = json.loads(minutes_raw)["data"] if minutes_raw else {}
    return Figures(today, per_minute.get("date"), minutes_of(per_minute))


def minutes_of(data: dict) -> Minutes:
    return {m: (v["count"], v["amount_cents"]) for m, v in data.get("minutes", {}).items()}


class DashboardSocket:
    """A dashboard's WebSocket, kept open all drill long: it reconnects by itself, as the page does.

    Each (re)connection starts from the snapshots the push server sends first;
    live ``orders.per_minute`` messages carry the changed minutes only and are
    merged in, a message of another day replaces the chart.
    """

    def __init__(self, settings: Settings, stop: asyncio.Event):
        token = Tokens.from_settings(settings).issue(channels=[ORDERS_TODAY, ORDERS_PER_MINUTE], subject="drill")
        self.url = f"ws://{settings.bind_host}:{settings.push_port}/ws?token={token}"
        self.origin = f"http://127.0.0.1:{settings.push_port}"
        self.stop = stop
        self.figures = Figures()
        self.connections = 0

    async def run(self) -> None:
        """Connect, read until the connection ends, connect again (pauses 0.2 s doubling up to 2 s)."""
        while not self.stop.is_set():
            try:
                async for attempt in async_retrying(first_s=0.2, max_s=2.0, jitter=True, stop=self.stop):
                    with attempt:
                        await self._connection()
            except Exception:  # noqa: BLE001 - only once stopping: the drill is over
                return

    async def _connection(self) -> None:
        ws = await websocket_connect(HTTPRequest(self.url, headers={"Origin": self.origin}, connect_timeout=2,
                                                 request_timeout=5))
        self.connections += 1
        self.figures = Figures()
        try:
            await ws.write_message(json.dumps({"subscribe": [ORDERS_TODAY, ORDERS_PER_MINUTE]}))
            while (message := await ws.read_message()) is not None:
                self._take(json.loads(message))
            log.info("dashboard socket closed (code %s): reconnecting", ws.close_code)
        finally:
            ws.close()

    def _take(self, envelope: dict) -> None:
        data, seen = envelope["data"], self.figures
        if envelope["channel"] == ORDERS_TODAY:
            self.figures = Figures(data, seen.minutes_day, seen.minutes)
        elif envelope["channel"] == ORDERS_PER_MINUTE:
            same_day = seen.minutes_day == data["date"]
            self.figures = Figures(seen.today, data["date"], ({**seen.minutes} if same_day else {}) | minutes_of(data))


@dataclass(frozen=True)
class Sms:
    """What the SMS gateway recorded: one message per idempotency key (the order id)."""

    count: int
    repeats: int                       # sends of a key already recorded (answered "duplicate")
    keys: frozenset[str] | None = None  # read only when the count matches


def _money(cents: int) -> str:
    return ("+" if cents > 0 else "-") + format_amount(abs(cents))


def _figures_difference(count: int, cents: int) -> str:
    return f"{count:+d} orders, {_money(cents)}" if (count, cents) != (0, 0) else ""


def _minutes_difference(shown: Minutes, truth: Minutes) -> str:
    wrong = sorted(m for m in shown.keys() | truth.keys() if shown.get(m, (0, 0)) != truth.get(m, (0, 0)))
    return f"{len(wrong)} minutes differ ({', '.join(wrong[:3])}{'...' if len(wrong) > 3 else ''})" if wrong else ""


def differences(truth: Truth, stored: Figures, socket: Figures, acknowledged: set[str] | frozenset[str],
                sms: Sms | None) -> dict[str, str]:
    """Per check of CHECKS, how the dashboard differs from the database ("" when it does not).

    `truth` must be of the day `stored.today` shows. `sms` None skips the SMS check.
    """
    found = dict.fromkeys(CHECKS, "")
    if stored.today is None:
        found["today"] = "no snapshot"
    elif stored.today["date"] != truth.day:
        found["today"] = f"shows {stored.today['date']}, compared with {truth.day}"
    else:
        found["today"] = _figures_difference(stored.today["count"] - truth.count,
                                             stored.today["amount_cents"] - truth.amount_cents)
    if stored.minutes_day != truth.day:
        found["per_minute"] = f"shows {stored.minutes_day}, not {truth.day}"
    else:
        summed = _figures_difference(sum(c for c, _ in stored.minutes.values()) - truth.count,
                                     sum(a for _, a in stored.minutes.values()) - truth.amount_cents)
        found["per_minute"] = "; ".join(filter(None, [_minutes_difference(stored.minutes, truth.minutes),
                                                      f"sum {summed}" if summed else ""]))
    if socket.today is None or socket.minutes_day is None:
        found["websocket"] = "no figures received"
    elif stored.today is not None:
        today = _figures_difference(socket.today["count"] - stored.today["count"],
                                    socket.today["amount_cents"] - stored.today["amount_cents"])
        minutes = (_minutes_difference(socket.minutes, stored.minutes) if socket.minutes_day == stored.minutes_day
                   else f"shows {socket.minutes_day}")
        found["websocket"] = "; ".join(filter(None, [today, minutes]))
    lost = len(set(acknowledged) - truth.ids)
    found["lost"] = f"{lost} acknowledged, not stored" if lost else ""
    if sms is not None:
        if sms.keys is None:
            found["sms"] = f"{sms.count - len(truth.ids):+d} messages"
        else:
            missing, extra = len(truth.ids - sms.keys), len(sms.keys - truth.ids)
            found["sms"] = ", ".join(filter(None, [f"{missing} orders without" if missing else "",
                                                   f"{extra} for no stored order" if extra else ""]))
    return found


class Probe:
    """Reads everything a check compares, and whether the load is quiescent."""

    def __init__(self, settings: Settings, payer: Payer, socket: DashboardSocket):
        self.settings = settings
        self.payer = payer
        self.socket = socket
        self.engine: Engine = make_engine(settings.database)
        self.redis = redis.Redis.from_url(settings.redis, socket_timeout=2, socket_connect_timeout=2)
        self.http = AsyncHTTPClient(force_instance=True)
        host = settings.bind_host
        self.sms_url = f"http://{host}:{settings.sms_gateway_port}"
        self.provider_url = f"http://{host}:{settings.payment_provider_port}/healthz"

    def _stores(self) -> tuple[Truth, Figures]:
        stored = read_redis(self.redis, self.settings.redis_prefix)
        day = stored.today["date"] if stored.today else datetime.now(self.settings.tz).date().isoformat()
        return read_truth(self.engine, day, self.settings.tz), stored

    async def _json(self, url: str) -> dict:
        return json.loads((await self.http.fetch(url, request_timeout=10)).body)

    async def read(self) -> tuple[Truth, dict[str, str], list[str]]:
        """(truth, differences per check, reasons the load is not quiescent yet); raises when a part is unreadable."""
        acknowledged = set(self.payer.acknowledged)  # before the database: each was stored before its reply
        truth, stored = await asyncio.to_thread(self._stores)
        health = await self._json(self.sms_url + "/healthz")
        sms = Sms(health["messages"], health["duplicates"])
        if sms.count == len(truth.ids):
            listed = await self._json(self.sms_url + "/messages")
            sms = Sms(sms.count, sms.repeats, frozenset(m["idempotency_key"] for m in listed["messages"]))
        busy = []
        if self.payer.outstanding:
            busy.append(f"payer: {self.payer.outstanding} notifies not yet acknowledged")
        provider = (await self._json(self.provider_url))["in_flight"]
        if provider:
            busy.append(f"payment provider: {provider} notifies not yet delivered")
        return truth, differences(truth, stored, self.socket.figures, acknowledged, sms), busy

    def close(self) -> None:
        self.http.close()
        self.redis.close()
        self.engine.dispose()
