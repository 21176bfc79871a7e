"""The Redis broker: snapshot keys plus pub/sub, surviving Redis restarts.

One subscriber task (redis.asyncio on the running loop, so nothing blocks the
push server): PSUBSCRIBE to the live channels first, then read every snapshot
key, then forward live envelopes. Subscribing before reading the snapshots
means nothing published in between is lost; the hub drops whatever is not newer
than what it has. Pub/sub drops what is published while disconnected, so after
every reconnect the snapshots are read again and clients get fresh totals.
"""
from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rtdash.channels import channel_of, live_pattern

from .hub import Hub
from .protocol import ProtocolError, parse_envelope

log = logging.getLogger("rtdash.push.redis")


class RedisBroker:
    def __init__(self, hub: Hub, url: str, prefix: str, *, max_backoff: float = 5.0):
        self.hub = hub
        self.url = url
        self.prefix = prefix
        self.max_backoff = max_backoff
        self.connected = False
        self.reconnects = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2, health_check_interval=10)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(live_pattern(self.prefix))
                    await self._load_snapshots(client)
                    self.connected = True
                    backoff = 0.2
                    log.info("redis connected at %s; forwarding %s", self.url, live_pattern(self.prefix))
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                        if message is not None:
                            self._forward(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("redis connection lost (%s); reconnecting", exc)
                self.connected = False
                self.reconnects += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                self.connected = False
                await client.aclose()

    async def _load_snapshots(self, client: aioredis.Redis) -> None:
        keys = [key async for key in client.scan_iter(match=f"{self.prefix}:snapshot:*", count=100)]
        values = await client.mget(keys) if keys else []
        envelopes = []
        for key, raw in zip(keys, values):
            if raw is None:
                continue
            try:
                envelopes.append(parse_envelope(raw))
            except ProtocolError as exc:
                log.warning("ignoring snapshot %s: %s", key.decode(errors="replace"), exc)
        self.hub.load_snapshots(envelopes)

    def _forward(self, redis_channel: bytes, raw: bytes) -> None:
        try:
            envelope = parse_envelope(raw)
            if envelope.channel != channel_of(self.prefix, redis_channel.decode()):
                raise ProtocolError("envelope channel differs from its pub/sub channel")
        except (ProtocolError, ValueError) as exc:
            log.warning("dropping message on %s: %s", redis_channel.decode(errors="replace"), exc)
            return
        self.hub.publish(envelope)
