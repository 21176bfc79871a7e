"""The Redis broker: snapshot keys plus pub/sub, surviving Redis going away.

One subscriber task (redis.asyncio on the running loop, so nothing blocks the
push server). On every (re)connect it PSUBSCRIBEs to the live channels first,
then reads every snapshot key and every channel's history (in one MULTI, so
they agree with each other), then forwards live envelopes. Subscribing before
reading means nothing published in between is lost; the hub drops whatever is
not newer than what it sent. Pub/sub drops what is published while
disconnected, so after every reconnect the snapshots and histories are read
again and clients get fresh totals (and resumes, the envelopes they missed).

A live envelope may carry only what changed (``orders.per_minute``), so after
forwarding one the broker reads that channel's snapshot key too: the hub then
holds the whole state for the next client to join. That snapshot may already
be newer than the live envelope (the job wrote again meanwhile); the connected
clients still get the live envelopes in between, which pub/sub brings in
order, so every process sends the same stream.

If Redis goes away the task reconnects after pauses doubling up to a cap
(for as long as the server runs: `stop` ends it); the push server keeps
serving its page, its clients keep their last figures, and `connected`
(shown on /healthz) is False meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import socket

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from rtdash.channels import CHANNELS, channel_of, history_key, live_pattern, snapshot_key
from rtdash.retry import async_retrying

from .hub import Hub
from .protocol import Envelope, ProtocolError, parse_envelope

log = logging.getLogger("rtdash.push.redis")

_KEEPALIVE = {opt: value for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
              if hasattr(socket, opt)}


class RedisBroker:
    """Feeds the hub from ``<prefix>:snapshot:*`` keys and ``<prefix>:live:*`` pub/sub."""

    def __init__(self, hub: Hub, url: str, prefix: str, *, channels: tuple[str, ...] = CHANNELS,
                 min_backoff: float = 0.2, max_backoff: float = 5.0, connect_timeout: float = 2.0):
        self.hub = hub
        self.url = url
        self.prefix = prefix
        self.channels = channels
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.connected = False
        self.reconnects = 0    # connections that worked and were lost
        self.failures = 0      # failed attempts and lost connections since the last connection that worked
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start the subscriber task; it connects (and reconnects) on its own."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-subscriber")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    def _client(self) -> aioredis.Redis:
        # No silent retries inside redis-py: a pub/sub connection that reconnected on its own would
        # skip the snapshot re-read, so every connection error reaches `_run`.
        return aioredis.Redis.from_url(
            self.url, socket_connect_timeout=self.connect_timeout, socket_keepalive=True,
            socket_keepalive_options={getattr(socket, k): v for k, v in _KEEPALIVE.items()},
            retry=Retry(NoBackoff(), 0))

    async def _run(self) -> None:
        """Connect and forward until `stop`; after a failure, connect again through `rtdash.retry`.

        The pauses double from `min_backoff` to `max_backoff` (plus a random part, so several push
        servers do not all reconnect at once) while attempts keep failing, and start over after a
        connection that worked.
        """
        while not self._stopping.is_set():
            try:
                async for attempt in async_retrying(first_s=self.min_backoff, max_s=self.max_backoff, jitter=True,
                                                    stop=self._stopping):
                    with attempt:
                        await self._connection()
            except Exception:  # noqa: BLE001 - only reached once stopping: the last failure is already logged
                return

    async def _connection(self) -> None:
        """One connection: raises when it could not connect, returns when one that worked is lost."""
        client = self._client()
        try:
            await self._serve(client)
        except (RedisError, OSError) as exc:
            if not self.connected:
                if self.failures == 0:
                    log.warning("redis unavailable at %s (%s); retrying", self.url, exc)
                self.failures += 1
                raise
            log.warning("redis connection lost (%s); reconnecting", exc)
        except Exception:  # a bug here must not stop the push server: logged, then retried after a pause
            log.exception("redis subscriber failed; restarting it")
            self.failures += 1
            raise
        finally:
            if self.connected:
                self.failures = 0
                self.reconnects += 1
            self.connected = False
            await client.aclose()

    async def _serve(self, client: aioredis.Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.psubscribe(live_pattern(self.prefix))
            count = await self._load_snapshots(client)
            self.connected = True
            log.info("redis connected at %s: %d snapshots read, forwarding %s", self.url, count,
                     live_pattern(self.prefix))
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None:
                    continue
                envelope = self._forward(message["channel"], message["data"])
                if envelope is not None:
                    await self._refresh(client, envelope.channel)

    async def _load_snapshots(self, client: aioredis.Redis) -> int:
        """Read every snapshot key and history and hand them all to the hub; the number of valid snapshots."""
        keys = {snapshot_key(self.prefix, channel).encode() for channel in self.channels}
        keys.update([key async for key in client.scan_iter(match=f"{self.prefix}:snapshot:*", count=100)])
        ordered = sorted(keys)
        if not ordered:
            self.hub.load_snapshots([], {})
            return 0
        head = len(snapshot_key(self.prefix, ""))
        names = [key.decode(errors="replace")[head:] for key in ordered]
        async with client.pipeline(transaction=True) as pipe:
            pipe.mget(ordered)
            for name in names:
                pipe.xrange(history_key(self.prefix, name))
            values, *ranges = await pipe.execute()
        envelopes = [e for key, raw in zip(ordered, values) if raw is not None
                     and (e := self._snapshot_envelope(key.decode(errors="replace"), raw)) is not None]
        histories = {name: self._history(name, entries) for name, entries in zip(names, ranges)}
        self.hub.load_snapshots(envelopes, histories)
        return len(envelopes)

    def _history(self, channel: str, entries: list) -> list[tuple[float, Envelope]]:
        """A history stream's entries as (time in ms, envelope); a bad entry is left out (a resume
        across it then gets a snapshot)."""
        out = []
        for entry_id, fields in entries:
            try:
                envelope = parse_envelope(fields[b"envelope"])
                if envelope.channel != channel:
                    raise ProtocolError(f"envelope of channel {envelope.channel!r}")
                out.append((float(entry_id.split(b"-")[0]), envelope))
            except (KeyError, ValueError) as exc:  # ProtocolError is a ValueError
                log.warning("ignoring history entry %s of %s: %s", entry_id, channel, exc)
        return out

    async def _refresh(self, client: aioredis.Redis, channel: str) -> None:
        key = snapshot_key(self.prefix, channel)
        raw = await client.get(key)
        if raw is not None and (envelope := self._snapshot_envelope(key, raw)) is not None:
            self.hub.snapshot(envelope, fan_out=False)

    def _snapshot_envelope(self, key: str, raw: bytes) -> Envelope | None:
        try:
            envelope = parse_envelope(raw)
        except ProtocolError as exc:
            log.warning("ignoring snapshot %s: %s", key, exc)
            return None
        if key != snapshot_key(self.prefix, envelope.channel):
            log.warning("ignoring snapshot %s: it holds channel %r", key, envelope.channel)
            return None
        return envelope

    def _forward(self, redis_channel: bytes, raw: bytes) -> Envelope | None:
        name = redis_channel.decode(errors="replace")
        try:
            envelope = parse_envelope(raw)
            if envelope.channel != channel_of(self.prefix, name):
                raise ProtocolError(f"envelope of channel {envelope.channel!r}")
        except (ProtocolError, ValueError) as exc:
            log.warning("dropping message on %s: %s", name, exc)
            return None
        self.hub.publish(envelope)
        return envelope
