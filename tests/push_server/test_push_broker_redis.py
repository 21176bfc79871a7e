"""The Redis broker against a real redis-server: snapshots, live messages, Redis going away.

The push server runs for real here (Tornado on a free port, the Redis broker,
WebSocket clients); the test plays the orders job by SETting snapshot keys and
PUBLISHing envelopes the way its Lua script does.
"""
from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import redis
import redis.asyncio as aioredis
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.testing import bind_unused_port
from tornado.websocket import WebSocketClosedError, websocket_connect

from dashboard_tokens import SECRET, fixed_tokens, with_token
from push_server.app import make_app
from push_server.broker_redis import RedisBroker
from push_server import metrics
from push_server.hub import Hub
from push_server.protocol import Position
from rtdash.channels import live_channel, snapshot_key
from rtdash.settings import Settings
from waiting import eventually_async

PREFIX = "pushtest"
TODAY, PER_MINUTE = "orders.today", "orders.per_minute"
pytestmark = pytest.mark.timeout(120)


def envelope(channel: str, seq: int, data: dict) -> str:
    return json.dumps({"channel": channel, "seq": seq, "data": data}, separators=(",", ":"))


def today(seq: int, count: int) -> str:
    return envelope(TODAY, seq, {"date": "2026-11-26", "count": count, "amount_cents": count * 100})


async def job_writes(client: aioredis.Redis, snapshot: str, live: str | None = None) -> None:
    """What the orders job does per batch: SET the snapshot and PUBLISH the live envelope, atomically."""
    channel = json.loads(snapshot)["channel"]
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(snapshot_key(PREFIX, channel), snapshot)
        pipe.publish(live_channel(PREFIX, channel), live or snapshot)
        await pipe.execute()


class PushServer:
    """The push server with a Redis broker, on a free port, inside the running loop."""

    def __init__(self, redis_url: str):
        sock, self.port = bind_unused_port()
        self.sock = sock
        self.origin = f"http://127.0.0.1:{self.port}"
        self.settings = Settings(_env_file=None, push_port=self.port, push_token_secret=SECRET)
        self.hub = Hub()
        self.broker = RedisBroker(self.hub, redis_url, PREFIX, min_backoff=0.05, max_backoff=0.3)

    async def __aenter__(self):
        from tornado.httpserver import HTTPServer

        self.server = HTTPServer(make_app(self.settings, self.hub, self.broker))
        self.server.add_sockets([self.sock])
        await self.broker.start()
        return self

    async def __aexit__(self, *exc):
        self.server.stop()
        self.hub.close_all(1001, "server going away")
        await self.broker.stop()
        await asyncio.wait_for(self.server.close_all_connections(), 10)

    async def connect(self):
        url = with_token(f"ws://127.0.0.1:{self.port}/ws", fixed_tokens().issue())
        return await websocket_connect(HTTPRequest(url, headers={"Origin": self.origin}))

    async def health(self) -> dict:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{self.port}/healthz")
        return json.loads(response.body)


async def read(ws, timeout: float = 10.0) -> dict:
    message = await asyncio.wait_for(ws.read_message(), timeout)
    assert message is not None, f"closed with {ws.close_code}"
    return json.loads(message)


def test_snapshots_on_connect_then_live_messages(push_redis):
    async def scenario():
        client = aioredis.Redis.from_url(push_redis.url)
        full = {"date": "2026-11-26", "minutes": {"10:00": {"count": 2, "amount_cents": 200}}}
        await client.set(snapshot_key(PREFIX, TODAY), today(4, 2))
        await client.set(snapshot_key(PREFIX, PER_MINUTE), envelope(PER_MINUTE, 2, full))
        await client.set(snapshot_key(PREFIX, "broken"), "not json")
        await client.set(snapshot_key(PREFIX, "mislabelled"), today(99, 99))
        try:
            async with PushServer(push_redis.url) as push:
                await eventually_async(lambda: push.broker.connected, what="the broker connected")
                health = await push.health()
                assert health["redis"] == "connected" and health["status"] == "ok"
                assert health["channels"] == {PER_MINUTE: 2, TODAY: 4}
                ws = await push.connect()
                # Only the two valid snapshots: the next envelopes read are the live ones below.
                assert [await read(ws), await read(ws)] == [json.loads(envelope(PER_MINUTE, 2, full)),
                                                             json.loads(today(4, 2))]

                live = {"date": "2026-11-26", "minutes": {"10:01": {"count": 1, "amount_cents": 100}}}
                full["minutes"].update(live["minutes"])
                await job_writes(client, envelope(PER_MINUTE, 3, full), envelope(PER_MINUTE, 3, live))
                await job_writes(client, today(5, 3))
                assert await read(ws) == json.loads(envelope(PER_MINUTE, 3, live))
                assert await read(ws) == json.loads(today(5, 3))
                # Dropped and logged: stale, repeated, not JSON, wrong channel for its pub/sub channel.
                # Pub/sub keeps their order, so the next envelope read being seq 6 shows none got through.
                await client.publish(live_channel(PREFIX, TODAY), today(3, 0))
                await client.publish(live_channel(PREFIX, TODAY), today(5, 0))
                await client.publish(live_channel(PREFIX, TODAY), "{oops")
                await client.publish(live_channel(PREFIX, PER_MINUTE), today(50, 0))
                await job_writes(client, today(6, 4))
                assert await read(ws) == json.loads(today(6, 4))

                # A late joiner starts from the whole day, read back from the snapshot key. (If it joins
                # before the broker has read the snapshot of seq 6, it gets the snapshot of seq 5 and then
                # the live envelope of seq 6 after it.)
                late = await push.connect()
                assert await read(late) == json.loads(envelope(PER_MINUTE, 3, full))
                first = await read(late)
                assert first in (json.loads(today(6, 4)), json.loads(today(5, 3)))
                if first["seq"] == 5:
                    assert await read(late) == json.loads(today(6, 4))
                assert (await push.health())["clients"] == 2
                ws.close()
                late.close()
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_lost_pubsub_connection_resubscribes_and_rereads_snapshots(push_redis):
    async def scenario():
        client = aioredis.Redis.from_url(push_redis.url)
        await client.set(snapshot_key(PREFIX, TODAY), today(1, 1))
        try:
            async with PushServer(push_redis.url) as push:
                await eventually_async(lambda: push.broker.connected, what="the broker connected")
                ws = await push.connect()
                assert (await read(ws))["seq"] == 1
                # Written while the subscriber is away: pub/sub would drop it, the snapshot keeps it.
                await client.set(snapshot_key(PREFIX, TODAY), today(2, 5))
                killed = await client.client_kill_filter(_type="pubsub")
                assert killed == 1
                assert await read(ws) == json.loads(today(2, 5))      # on the same WebSocket
                assert push.broker.reconnects == 1
                await eventually_async(lambda: push.broker.connected, what="the broker connected")
                await job_writes(client, today(3, 6))
                assert (await read(ws))["seq"] == 3
                ws.close()
        finally:
            await client.aclose()

    asyncio.run(scenario())


class Dashboard:
    """A client that reconnects like the page does, remembering the latest data per channel."""

    def __init__(self, push: PushServer):
        self.push = push
        self.latest: dict[str, dict] = {}
        self.close_codes: list[int | None] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                ws = await self.push.connect()
            except OSError:
                await asyncio.sleep(0.1)                    # the page's own pause before reconnecting
                continue
            while (message := await ws.read_message()) is not None:
                envelope = json.loads(message)
                self.latest[envelope["channel"]] = envelope
            self.close_codes.append(ws.close_code)
            await asyncio.sleep(0.05)                       # the page's own pause before reconnecting

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketClosedError):
            await self.task


def test_redis_stopped_and_restarted_server_keeps_running_and_clients_get_fresh_snapshots(push_redis):
    async def scenario():
        client = aioredis.Redis.from_url(push_redis.url)
        await job_writes(client, today(4, 4))
        await client.aclose()
        async with PushServer(push_redis.url) as push:
            await eventually_async(lambda: push.broker.connected, what="the broker connected")
            dashboard = Dashboard(push)
            try:
                await eventually_async(lambda: dashboard.latest.get(TODAY, {}).get("seq") == 4,
                                       what="the dashboard at seq 4")

                push_redis.stop()
                await eventually_async(lambda: not push.broker.connected, what="the broker sees Redis gone")
                health = await push.health()                    # still serving, and says what is wrong
                assert health["redis"] == "disconnected" and health["status"] == "degraded"
                assert health["clients"] == 1
                page = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{push.port}/")
                assert page.code == 200
                await eventually_async(lambda: push.broker.failures >= 4, what="several failed reconnects")
                assert dashboard.close_codes == []              # clients keep their figures meanwhile

                # Redis comes back empty (no persistence), so the job numbers from 1 again: the
                # server resets its clients (1012), which reconnect and start from the new snapshot.
                push_redis.start()
                client = aioredis.Redis.from_url(push_redis.url)
                await job_writes(client, today(1, 9))
                await eventually_async(lambda: push.broker.connected, what="the broker connected")
                await eventually_async(lambda: dashboard.latest.get(TODAY, {}).get("data", {}).get("count") == 9,
                                       what="the dashboard showing 9 orders")
                assert dashboard.close_codes == [1012]
                assert push.hub.latest(TODAY).seq == 1

                await job_writes(client, today(2, 10))
                await eventually_async(lambda: dashboard.latest[TODAY]["seq"] == 2, what="the dashboard at seq 2")
                assert (await push.health())["redis"] == "connected"
                await client.aclose()
            finally:
                await dashboard.stop()

    asyncio.run(scenario())


def test_broker_stops_cleanly_while_redis_is_down():
    async def scenario():
        sock, port = bind_unused_port()
        sock.close()                                   # nothing listens there
        hub = Hub()
        broker = RedisBroker(hub, f"redis://127.0.0.1:{port}/0", PREFIX, min_backoff=0.05, max_backoff=0.1)
        await broker.start()
        await eventually_async(lambda: broker.failures >= 3, what="failed attempts to connect")
        assert not broker.connected and broker.reconnects == 0
        await broker.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    asyncio.run(scenario())


class SlowFanOut:
    """A hub subscriber for which the envelope of `after_seq` takes a long fan-out, during which `burst` is
    published (as when publishes come faster than the server delivers to thousands of clients)."""

    def __init__(self, redis_url: str, after_seq: int, burst: list[str]):
        self.redis_url = redis_url
        self.after_seq = after_seq
        self.burst = burst
        self.offered: list[dict] = []

    def offer(self, envelope) -> None:
        self.offered.append(json.loads(envelope.text))
        if self.burst and envelope.seq == self.after_seq:
            publisher = redis.Redis.from_url(self.redis_url)
            for text in self.burst:   # blocks the loop, like a long fan-out
                publisher.publish(live_channel(PREFIX, PER_MINUTE), text)
            publisher.close()
            self.burst = []

    def reached(self, seq: int):
        def check() -> bool:
            assert self.offered and self.offered[-1]["seq"] == seq, [e["seq"] for e in self.offered]
            return True
        return check

    def reset(self, reason: str) -> None:
        raise AssertionError(f"reset: {reason}")

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed: {code} {reason}")


def test_publishes_faster_than_the_fan_out_merge_into_the_latest_state_and_all_stay_resumable(push_redis):
    """Envelopes that arrive during a fan-out do not queue up: the next fan-out sends one envelope with
    all their minutes (so the delay stays one round), while the history keeps each for resumes."""
    def minute(seq: int) -> str:
        return json.dumps({"channel": PER_MINUTE, "epoch": "e1", "seq": seq,
                           "data": {"date": "2026-11-26", "minutes": {f"10:{seq:02d}": {"count": seq}}}})

    async def scenario():
        client = aioredis.Redis.from_url(push_redis.url)
        await client.set(snapshot_key(PREFIX, PER_MINUTE), minute(1))
        hub = Hub()
        broker = RedisBroker(hub, push_redis.url, PREFIX)
        slow = SlowFanOut(push_redis.url, 2, [minute(seq) for seq in range(3, 23)] + [minute(5)])
        merged_before = metrics.FAN_OUT_MERGED._value.get()
        try:
            await broker.start()
            await eventually_async(lambda: broker.connected, what="the broker connected")
            hub.join(slow)
            await client.publish(live_channel(PREFIX, PER_MINUTE), minute(2))
            await eventually_async(slow.reached(22), what="seq 22 fanned out")
        finally:
            await broker.stop()
            await client.aclose()
        seqs = [e["seq"] for e in slow.offered]
        assert seqs[:2] == [1, 2] and len(seqs) < 12, seqs        # 20 envelopes arrived in one fan-out round
        assert seqs == sorted(seqs)
        minutes = {}
        for e in slow.offered:
            minutes.update(e["data"]["minutes"])
        assert minutes == {f"10:{seq:02d}": {"count": seq} for seq in range(1, 23)}
        assert metrics.FAN_OUT_MERGED._value.get() - merged_before == 22 - len(seqs)
        assert [e.seq for e in hub.history(PER_MINUTE)] == list(range(2, 23))
        resumed = Recorder()
        hub.join(resumed, since={PER_MINUTE: Position("e1", 2)})
        assert [e.seq for e in resumed.offered] == list(range(3, 23))

    asyncio.run(scenario())


class Recorder:
    def __init__(self):
        self.offered = []

    def offer(self, envelope) -> None:
        self.offered.append(envelope)

    def reset(self, reason: str) -> None:
        raise AssertionError(reason)

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(reason)


def test_broker_stops_even_when_a_cancel_is_lost_inside_the_redis_client(push_redis):
    """Under load a cancel can be swallowed inside redis-py's clean-up: the fan-out task then ends anyway, so
    the broker (and the push server's SIGTERM) still stops."""
    async def scenario():
        client = aioredis.Redis.from_url(push_redis.url)
        hub = Hub()
        broker = RedisBroker(hub, push_redis.url, PREFIX, connect_timeout=1.0)
        refreshing = asyncio.Event()

        async def refresh_that_swallows_its_cancel(_client, _channel):
            refreshing.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                pass

        broker._refresh = refresh_that_swallows_its_cancel
        try:
            await broker.start()
            await eventually_async(lambda: broker.connected, what="the broker connected")
            await client.publish(live_channel(PREFIX, TODAY), today(1, 1))
            await asyncio.wait_for(refreshing.wait(), 10)
            stopping = asyncio.ensure_future(broker.stop())
            done, _ = await asyncio.wait({stopping}, timeout=5)
            assert done, "the broker did not stop"
        finally:
            await client.aclose()

    asyncio.run(scenario())
