"""Slow clients cost nothing: a client that does not read holds one waiting envelope per channel and
ends with the same state as a client that read everything; one that stops reading is closed."""
from __future__ import annotations

import asyncio
import json

from push_server.broker import MemoryBroker
from push_server.hub import Hub
from push_server.protocol import coalesce, encode_envelope, parse_envelope
from push_server.session import CLOSE_TOO_SLOW, Session
from waiting import eventually_async

DAY = "2026-11-30"


class Page:
    """A client applying envelopes as the dashboard page does (app.js): per-minute channels merge their
    minutes into the day (a new day replaces it), every other channel takes the latest data."""

    def __init__(self, reading: bool = True):
        self.gate = asyncio.Event()
        if reading:
            self.gate.set()
        self.received: list[tuple[str, int]] = []
        self.state: dict[str, dict] = {}
        self.closed: tuple[int, str] | None = None

    def write(self, text: str):
        """Taken at once while the page reads (as a socket with room takes a frame), else once it reads again."""
        if self.gate.is_set():
            self.apply(text)
            return None
        return self.later(text)

    async def later(self, text: str) -> None:
        await self.gate.wait()
        self.apply(text)

    def apply(self, text: str) -> None:
        envelope = json.loads(text)
        channel, data = envelope["channel"], envelope["data"]
        self.received.append((channel, envelope["seq"]))
        if "minutes" in data:
            day = self.state.setdefault(channel, {"date": None, "minutes": {}})
            if day["date"] != data["date"]:
                day["minutes"] = {}
            day["date"] = data["date"]
            day["minutes"].update(data["minutes"])
        else:
            self.state[channel] = data

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Jobs:
    """What the Spark jobs write, through the in-memory broker: the snapshot (whole state), then the live
    envelope (on orders.per_minute only the minute that changed)."""

    def __init__(self, broker: MemoryBroker):
        self.broker = broker
        self.seq: dict[str, int] = {}
        self.today = {"date": DAY, "count": 0, "amount_cents": 0}
        self.minutes: dict[str, dict] = {}
        self.traffic = {"date": DAY, "page_views": 0, "visitors": 0, "logged_in_users": 0, "searches": 0,
                        "bot_requests": 0}

    def _write(self, channel: str, snapshot: dict, live: dict) -> None:
        seq = self.seq[channel] = self.seq.get(channel, 0) + 1
        self.broker.write(encode_envelope(channel, seq, snapshot), encode_envelope(channel, seq, live))

    def order(self, i: int) -> None:
        minute = f"10:{i % 60:02d}"
        self.today = {**self.today, "count": self.today["count"] + 1, "amount_cents": self.today["amount_cents"] + i}
        old = self.minutes.get(minute, {"count": 0, "amount_cents": 0})
        self.minutes[minute] = {"count": old["count"] + 1, "amount_cents": old["amount_cents"] + i}
        self._write("orders.today", self.today, self.today)
        self._write("orders.per_minute", {"date": DAY, "minutes": dict(self.minutes)},
                    {"date": DAY, "minutes": {minute: self.minutes[minute]}})

    def page_view(self) -> None:
        self.traffic = {**self.traffic, "page_views": self.traffic["page_views"] + 1}
        self._write("traffic.today", self.traffic, self.traffic)

    def truth(self) -> dict[str, dict]:
        return {"orders.today": self.today, "orders.per_minute": {"date": DAY, "minutes": self.minutes},
                "traffic.today": self.traffic}


def test_a_client_that_does_not_read_holds_one_envelope_per_channel_and_ends_with_the_latest():
    async def scenario():
        hub = Hub()
        broker = MemoryBroker(hub)
        await broker.start()
        jobs = Jobs(broker)
        slow_page, fast_page = Page(reading=False), Page()
        slow, fast = Session(slow_page, queue_size=256), Session(fast_page, queue_size=256)
        hub.join(slow)
        hub.join(fast)
        published = 0
        most_waiting = 0
        for i in range(400):                               # 1,000 envelopes on 3 channels
            jobs.order(i)
            published += 2
            if i % 2 == 0 and published < 1000:
                jobs.page_view()
                published += 1
            most_waiting = max(most_waiting, len(slow.waiting))
        assert published == 1000
        assert most_waiting <= 3 and slow.closed is False and slow_page.closed is None
        # Every envelope reached the client that reads, in order; nothing was coalesced for it.
        await eventually_async(lambda: len(fast_page.received) == 1000, what="the fast client gets all 1,000")
        assert fast_page.state == jobs.truth() and fast_page.closed is None
        # The slow client reads again: the one envelope its writer held, then the latest of each channel.
        slow_page.gate.set()
        await eventually_async(lambda: slow_page.state == jobs.truth(),
                               what="the slow client's state equals the jobs' state")
        await eventually_async(lambda: not slow.waiting, what="nothing left waiting")
        assert len(slow_page.received) <= 4
        latest = {channel: seq for channel, seq in slow_page.received}
        assert latest == jobs.seq and slow_page.state == fast_page.state
        for session in (slow, fast):
            session.close()
            await session.wait_closed()

    asyncio.run(scenario())


def test_a_slow_client_that_joins_late_gets_snapshot_and_live_merged_into_the_whole_day():
    async def scenario():
        hub = Hub()
        jobs = Jobs(MemoryBroker(hub))
        for i in range(5):
            jobs.order(i)
        # Live envelopes whose snapshot the broker has not read yet sit in the hub's tail.
        hub.publish(parse_envelope(encode_envelope("orders.per_minute", 6,
                                                   {"date": DAY, "minutes": {"11:00": {"count": 1, "amount_cents": 7}}})))
        page = Page(reading=False)
        session = Session(page, queue_size=256)
        hub.join(session)
        assert set(session.waiting) <= {"orders.today", "orders.per_minute"}
        page.gate.set()
        expected = {**jobs.minutes, "11:00": {"count": 1, "amount_cents": 7}}
        await eventually_async(lambda: page.state.get("orders.per_minute") == {"date": DAY, "minutes": expected},
                               what="the whole day, the tail's minute included")
        session.close()
        await session.wait_closed()

    asyncio.run(scenario())


def test_coalescing_per_minute_envelopes_keeps_every_minute_and_a_new_day_replaces():
    def envelope(seq, data, **extra):
        return parse_envelope(json.dumps({"channel": "orders.per_minute", "seq": seq, "data": data, **extra}))

    a = envelope(1, {"date": DAY, "minutes": {"10:00": {"count": 1}, "10:01": {"count": 1}}})
    b = envelope(2, {"date": DAY, "minutes": {"10:01": {"count": 2}, "10:02": {"count": 1}}})
    merged = coalesce(a, b)
    assert merged.seq == 2 and json.loads(merged.text) == {
        "channel": "orders.per_minute", "seq": 2,
        "data": {"date": DAY, "minutes": {"10:00": {"count": 1}, "10:01": {"count": 2}, "10:02": {"count": 1}}}}
    tomorrow = envelope(3, {"date": "2026-12-01", "minutes": {}})
    assert coalesce(merged, tomorrow) == tomorrow
    other_epoch = envelope(4, {"date": DAY, "minutes": {"10:05": {"count": 1}}}, epoch="e2")
    assert coalesce(envelope(3, {"date": DAY, "minutes": {"10:04": {"count": 1}}}, epoch="e1"),
                    other_epoch) == other_epoch
    # Other channels hold their whole state in every envelope: the newer one replaces.
    t1 = parse_envelope(json.dumps({"channel": "orders.today", "seq": 1, "data": {"count": 1}}))
    t2 = parse_envelope(json.dumps({"channel": "orders.today", "seq": 2, "data": {"count": 2}}))
    assert coalesce(t1, t2) is t2


def test_a_client_that_stops_reading_is_closed_and_an_idle_one_is_not():
    async def scenario():
        hub = Hub()
        stuck_page, idle_page = Page(reading=False), Page()
        stuck = Session(stuck_page, queue_size=256, stall_seconds=0.3, on_close=hub.leave)
        idle = Session(idle_page, queue_size=256, stall_seconds=0.3)
        hub.join(stuck)
        hub.join(idle)
        hub.publish(parse_envelope(encode_envelope("orders.today", 1, {"count": 1})))
        await eventually_async(lambda: stuck_page.closed, timeout=5, what="the client that stopped reading closed")
        assert stuck_page.closed == (CLOSE_TOO_SLOW, "stopped reading") and stuck.closed
        assert hub.subscriptions(stuck) == set() and hub.clients == 1
        # The other client read its envelope and has had nothing to write since: idle is not stalled.
        assert idle_page.received == [("orders.today", 1)] and idle_page.closed is None and not idle.closed
        hub.publish(parse_envelope(encode_envelope("orders.today", 2, {"count": 2})))
        await eventually_async(lambda: idle_page.received[-1] == ("orders.today", 2), what="the idle client still gets")
        idle.close()
        await idle.wait_closed()

    asyncio.run(scenario())
