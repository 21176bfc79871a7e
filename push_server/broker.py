"""Where envelopes come from: a small interface, and the in-memory broker.

A broker feeds a hub: snapshots when it (re)connects, live envelopes after.
`MemoryBroker` is the default for a push server without Redis (a single
process, e.g. in tests) and the test double; `RedisBroker` (broker_redis.py)
is the one the stack runs.
"""
from __future__ import annotations

from typing import Protocol

from .hub import Hub
from .protocol import Envelope, parse_envelope


class Broker(Protocol):
    connected: bool

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class MemoryBroker:
    """Envelopes published in-process go straight to the hub."""

    connected = True

    def __init__(self, hub: Hub):
        self.hub = hub

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def publish(self, raw: str | bytes) -> Envelope:
        envelope = parse_envelope(raw)
        self.hub.publish(envelope)
        return envelope
