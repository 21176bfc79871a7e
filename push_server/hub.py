"""The hub: which session gets which channel, and the latest envelope of each channel.

No I/O here. The broker feeds envelopes in; the hub hands each one to the
sessions of its channel without waiting for any of them (a session has its own
queue). The latest envelope per channel is the snapshot a joining client gets
first, so a client never waits for the next order to see today's totals.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from .protocol import Envelope

log = logging.getLogger("rtdash.push.hub")


class Subscriber(Protocol):
    def offer(self, envelope: Envelope) -> None: ...
    def reset(self, reason: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Hub:
    ALL = "*"

    def __init__(self) -> None:
        self._latest: dict[str, Envelope] = {}
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._channels_of: dict[Subscriber, set[str]] = {}

    @property
    def clients(self) -> int:
        return len(self._channels_of)

    def channels(self) -> list[str]:
        return sorted(self._latest)

    def latest(self, channel: str) -> Envelope | None:
        return self._latest.get(channel)

    def join(self, subscriber: Subscriber, channels: list[str] | None = None) -> None:
        """Subscribe (all channels when `channels` is None) and send the snapshots first."""
        wanted = {self.ALL} if channels is None else set(channels)
        before = self._channels_of.get(subscriber, set())
        for channel in before - wanted:
            self._subscribers[channel].discard(subscriber)
        for channel in wanted - before:
            self._subscribers[channel].add(subscriber)
        self._channels_of[subscriber] = wanted
        new = wanted - before
        for channel in sorted(self._latest):
            if channel in new or (self.ALL in new and channel not in before):
                subscriber.offer(self._latest[channel])

    def leave(self, subscriber: Subscriber) -> None:
        for channel in self._channels_of.pop(subscriber, set()):
            self._subscribers[channel].discard(subscriber)

    def close_all(self, code: int, reason: str) -> None:
        for subscriber in list(self._channels_of):
            subscriber.close(code, reason)

    def publish(self, envelope: Envelope) -> bool:
        """Fan a live envelope out; an envelope not newer than the latest is dropped."""
        latest = self._latest.get(envelope.channel)
        if latest is not None and envelope.seq <= latest.seq:
            return False
        self._latest[envelope.channel] = envelope
        targets = self._subscribers.get(envelope.channel, set()) | self._subscribers.get(self.ALL, set())
        for subscriber in targets:
            subscriber.offer(envelope)
        return True

    def load_snapshots(self, envelopes: list[Envelope]) -> None:
        """The snapshots read from Redis at start or after a reconnect.

        A snapshot newer than what clients have is sent like a live message.
        A channel whose snapshot is gone, or numbered lower than before, means
        Redis lost its data (restarted without persistence) and the numbering
        starts again: the hub forgets those channels and resets every client,
        which reconnects and starts over from the snapshots.
        """
        fresh = {e.channel: e for e in envelopes}
        lost = [c for c, latest in self._latest.items() if c not in fresh or fresh[c].seq < latest.seq]
        if lost:
            log.warning("redis lost channels %s (numbering restarted): resetting %d clients",
                        ", ".join(sorted(lost)), self.clients)
            for channel in lost:
                del self._latest[channel]
            for subscriber in list(self._channels_of):
                subscriber.reset("snapshot numbering restarted")
        for envelope in fresh.values():
            self.publish(envelope)
