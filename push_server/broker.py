"""Where envelopes come from: a small interface, and the in-memory broker.

A broker feeds a hub: every snapshot when it (re)connects, then each live
envelope followed by the channel's snapshot as it stands after it, so the hub
always holds a full snapshot for joining sessions. `MemoryBroker` is the
broker of a single process without Redis and the test double; `RedisBroker`
(broker_redis.py) is the one the stack runs.
"""
from __future__ import annotations

from typing import Protocol

from .hub import Hub
from .protocol import Envelope, parse_envelope


class Broker(Protocol):
    """What the app needs of a broker: start, stop, and whether its source is reachable."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class MemoryBroker:
    """Snapshot "keys" and live messages in process memory, handed straight to the hub.

    `write(snapshot, live)` does what a job does in Redis (SET the snapshot,
    PUBLISH the live envelope); `reconnect()` does what the Redis broker does
    after a reconnect (hand every snapshot to the hub).
    """

    def __init__(self, hub: Hub):
        self.hub = hub
        self.snapshots: dict[str, str] = {}
        self.connected = False

    async def start(self) -> None:
        self.connected = True
        self.reconnect()

    async def stop(self) -> None:
        self.connected = False

    def reconnect(self) -> None:
        self.hub.load_snapshots([parse_envelope(raw) for raw in self.snapshots.values()])

    def set_snapshot(self, raw: str | bytes) -> Envelope:
        envelope = parse_envelope(raw)
        self.snapshots[envelope.channel] = envelope.text
        return envelope

    def publish(self, raw: str | bytes) -> Envelope:
        """A live envelope, then the channel's snapshot (if any) for joining sessions."""
        envelope = parse_envelope(raw)
        self.hub.publish(envelope)
        snapshot = self.snapshots.get(envelope.channel)
        if snapshot is not None:
            self.hub.snapshot(parse_envelope(snapshot))
        return envelope

    def write(self, snapshot: str | bytes, live: str | bytes | None = None) -> Envelope:
        """SET the snapshot and PUBLISH the live envelope (the snapshot itself by default)."""
        self.set_snapshot(snapshot)
        return self.publish(live if live is not None else snapshot)
