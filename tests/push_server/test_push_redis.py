"""The Redis broker against a real redis-server: snapshots, live messages, and Redis going away."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from push_server.broker_redis import RedisBroker
from push_server.hub import Hub
from rtdash.channels import live_channel, snapshot_key
from rtdash.settings import Settings
from rtdash.stack import free_port, redis_service

PREFIX = "pushtest"


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own: the test stops and restarts it."""
    settings = Settings(_env_file=None, home=tmp_path, redis_port=free_port())
    service = redis_service(settings, persist=False)
    service.start()
    service.wait_healthy()
    yield service, settings
    service.stop()


class Recorder:
    def __init__(self):
        self.got: list[tuple[str, int, dict]] = []
        self.closed = None

    def offer(self, envelope):
        message = json.loads(envelope.text)
        self.got.append((message["channel"], message["seq"], message["data"]))

    def reset(self, reason):
        self.closed = reason

    def close(self, code, reason):
        self.closed = reason


def envelope(channel, seq, count):
    return json.dumps({"channel": channel, "seq": seq, "data": {"count": count}})


async def eventually(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_snapshots_then_live_messages_then_recovery_after_redis_restart(own_redis):
    service, settings = own_redis

    async def scenario():
        client = aioredis.Redis.from_url(settings.redis)
        await client.set(snapshot_key(PREFIX, "orders.today"), envelope("orders.today", 4, 10))
        await client.set(snapshot_key(PREFIX, "broken"), "not json")
        hub, viewer = Hub(), Recorder()
        hub.join(viewer)
        broker = RedisBroker(hub, settings.redis, PREFIX, max_backoff=0.5)
        await broker.start()
        try:
            await eventually(lambda: broker.connected and viewer.got)
            assert viewer.got == [("orders.today", 4, {"count": 10})]      # the broken snapshot is skipped
            await client.publish(live_channel(PREFIX, "orders.today"), envelope("orders.today", 5, 11))
            await client.publish(live_channel(PREFIX, "orders.today"), envelope("orders.today", 3, 0))  # stale
            await client.publish(live_channel(PREFIX, "orders.today"), envelope("other.channel", 9, 0))  # mislabelled
            await eventually(lambda: len(viewer.got) >= 2)
            await asyncio.sleep(0.2)
            assert viewer.got == [("orders.today", 4, {"count": 10}), ("orders.today", 5, {"count": 11})]

            # Pub/sub drops what is published while disconnected: after a reconnect the snapshot is re-read.
            await client.set(snapshot_key(PREFIX, "orders.today"), envelope("orders.today", 6, 12))
            await client.client_kill_filter(_type="pubsub")
            await eventually(lambda: viewer.got[-1][1] == 6)
            assert viewer.got[-1] == ("orders.today", 6, {"count": 12}) and broker.reconnects >= 1
            await client.aclose()

            service.stop()                                    # Redis goes away: the broker keeps trying
            await eventually(lambda: not broker.connected)
            service.start()
            service.wait_healthy()
            client = aioredis.Redis.from_url(settings.redis)
            # Redis came back empty (no persistence): the job's next write numbers from 1 again,
            # and the hub resets its clients so they start over from the new snapshots.
            await eventually(lambda: broker.connected)
            assert viewer.closed == "snapshot numbering restarted"
            await client.set(snapshot_key(PREFIX, "orders.today"), envelope("orders.today", 1, 15))
            await client.publish(live_channel(PREFIX, "orders.today"), envelope("orders.today", 1, 15))
            await eventually(lambda: hub.latest("orders.today") is not None)
            assert hub.latest("orders.today").seq == 1
            await client.aclose()
        finally:
            await broker.stop()

    asyncio.run(scenario())
