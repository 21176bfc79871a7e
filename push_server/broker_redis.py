"""The Redis broker: snapshot keys plus pub/sub, surviving Redis going away.

One subscriber task (redis.asyncio on the running loop, so nothing blocks the
push server). On every (re)connect it PSUBSCRIBEs to the live channels first,
then reads every snapshot key and every channel's history (in one MULTI, so
they agree with each other), then forwards live envelopes. Subscribing before
reading means nothing published in between is lost; the hub drops whatever is
not newer than what it sent. Pub/sub drops what is published while
disconnected, so after every reconnect the snapshots and histories are read
again and clients get fresh totals (and resumes, the envelopes they missed).

Two tasks share a connection's work: one reads pub/sub as fast as it comes
and records each envelope in the hub's history; the other fans out what was
read, one envelope per channel, merged (`Inbox`) when several arrived during
the previous fan-out. So when publishes come faster than the clients can be
served, the delay stays about one fan-out round instead of growing in the
connection's buffers, and resumes still get every envelope.

A live envelope may carry only what changed (``orders.per_minute``), so after
fanning one out the broker reads that channel's snapshot key too: the hub then
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
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from rtdash.channels import CHANNELS, channel_of, history_key, live_pattern, snapshot_key
from rtdash.retry import async_retrying

from . import metrics
from .hub import Hub
from .protocol import Envelope, ProtocolError, coalesce, parse_envelope

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
            inbox = Inbox()
            tasks = [asyncio.create_task(self._read(pubsub, inbox), name="redis-reader"),
                     asyncio.create_task(self._deliver(client, inbox), name="redis-fan-out")]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()   # raises what ended it (both run until the inbox closes)
            finally:
                # Cancelled, and told by the inbox: under load a cancel can be lost inside redis-py's own
                # clean-up (seen: the fan-out task went on waiting for envelopes after its GET was cancelled,
                # and the server never stopped). A task still running after the grace period ends when the
                # pub/sub connection closes beneath it.
                inbox.close()
                for task in tasks:
                    task.cancel()
                _, running = await asyncio.wait(tasks, timeout=self.connect_timeout)
                if running:
                    log.warning("redis tasks still running after %.0f s: %s", self.connect_timeout,
                                ", ".join(task.get_name() for task in running))

    async def _read(self, pubsub: PubSub, inbox: Inbox) -> None:
        """Read pub/sub as fast as it comes: each envelope into the hub's history, then into the inbox.

        Never waits on the fan-out, so envelopes do not queue in the connection (where Redis would
        hold them, and their age would grow without bound once publishes come faster than the
        clients are served); what the fan-out has not taken yet is merged in the inbox instead.
        """
        while not inbox.closed:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None:
                continue
            envelope = self._parse(message["channel"], message["data"])
            if envelope is not None:
                self.hub.record(envelope)
                inbox.put(envelope)

    async def _deliver(self, client: aioredis.Redis, inbox: Inbox) -> None:
        """Fan out what the inbox holds, one envelope per channel, then read that channel's snapshot."""
        while not inbox.closed:
            for envelope in await inbox.take():
                self.hub.publish(envelope)
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

    def _parse(self, redis_channel: bytes, raw: bytes) -> Envelope | None:
        name = redis_channel.decode(errors="replace")
        try:
            envelope = parse_envelope(raw)
            if envelope.channel != channel_of(self.prefix, name):
                raise ProtocolError(f"envelope of channel {envelope.channel!r}")
        except (ProtocolError, ValueError) as exc:
            log.warning("dropping message on %s: %s", name, exc)
            return None
        return envelope


class Inbox:
    """Live envelopes read but not fanned out yet: one per channel, a newer one merged into the one waiting.

    Usually it holds one envelope at a time. When the fan-out falls behind (more
    publishes than the server can deliver to its clients) the envelopes that
    arrive meanwhile merge into one per channel (`protocol.coalesce`, as a slow
    client's queue does), so the next fan-out sends the latest state: the
    delay from publish to client stays about one fan-out round, and the inbox
    about one envelope per channel, however far the publishes outrun it.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, Envelope] = {}
        self._ready = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """The connection is ending: `take` returns nothing from now on, at once."""
        self.closed = True
        self._waiting.clear()
        self._ready.set()

    def put(self, envelope: Envelope) -> None:
        if self.closed:
            return
        older = self._waiting.get(envelope.channel)
        if older is None:
            self._waiting[envelope.channel] = envelope
        elif older.epoch == envelope.epoch and envelope.seq <= older.seq:
            return   # a repeated or stale one: the hub would drop it, and it must not replace a newer one
        else:
            self._waiting[envelope.channel] = coalesce(older, envelope)
            metrics.FAN_OUT_MERGED.inc()
        self._ready.set()

    async def take(self) -> list[Envelope]:
        """Wait until something is waiting, then take all of it (oldest channel first); nothing once closed."""
        await self._ready.wait()
        if self.closed:
            return []
        self._ready.clear()
        taken, self._waiting = list(self._waiting.values()), {}
        return taken
