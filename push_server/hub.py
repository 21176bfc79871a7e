"""The hub: which session gets which channel, and what a joining session gets first.

No I/O here. The broker feeds envelopes in; the hub hands each one to the
sessions of its channel without waiting for any of them (a session has its own
bounded queue).

Two kinds of envelope come in, with one numbering per channel:

* a *snapshot* (read from ``<prefix>:snapshot:<channel>``) holds the whole
  state of the channel;
* a *live* envelope (from pub/sub) may hold only what changed (for example the
  minutes of ``orders.per_minute`` a batch touched).

So a joining session gets the latest snapshot, then the live envelopes numbered
after it, which brings it to exactly what a session connected all along has.
The live tail is pruned whenever a newer snapshot arrives (the broker reads one
after every live envelope) and is bounded in any case.

Every envelope is fanned out at most once and in increasing ``seq`` per
channel: whatever is not newer than the last one sent (a snapshot re-read
racing a publish, a replayed message) is dropped.
"""
from __future__ import annotations

import logging
from collections import defaultdict, deque
from typing import Protocol

from .protocol import Envelope

log = logging.getLogger("rtdash.push.hub")

ALL = "*"  # a session subscribed to ALL gets every channel, including ones that appear later


class Subscriber(Protocol):
    def offer(self, envelope: Envelope) -> None: ...
    def reset(self, reason: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Hub:
    """Channels to sessions, plus the latest snapshot and live tail of each channel."""

    def __init__(self, *, max_tail: int = 64) -> None:
        self.max_tail = max_tail
        self._snapshot: dict[str, Envelope] = {}
        self._tail: dict[str, deque[Envelope]] = defaultdict(deque)
        self._sent: dict[str, int] = {}
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._channels_of: dict[Subscriber, set[str]] = {}
        self._overflowing: set[str] = set()

    @property
    def clients(self) -> int:
        return len(self._channels_of)

    def sessions(self) -> list[Subscriber]:
        return list(self._channels_of)

    def channels(self) -> list[str]:
        return sorted(self._sent)

    def subscriptions(self, subscriber: Subscriber) -> set[str]:
        """The channels `subscriber` asked for ({ALL} by default); empty once it left."""
        return set(self._channels_of.get(subscriber, ()))

    def latest(self, channel: str) -> Envelope | None:
        """The latest snapshot of `channel` (what a joining session starts from)."""
        return self._snapshot.get(channel)

    def last_seq(self, channel: str) -> int | None:
        """The seq of the newest envelope fanned out on `channel`."""
        return self._sent.get(channel)

    def backlog(self, channel: str) -> list[Envelope]:
        """What a joining session gets for `channel`: the snapshot, then the live tail after it."""
        snapshot = self._snapshot.get(channel)
        return ([snapshot] if snapshot else []) + list(self._tail.get(channel, ()))

    def join(self, subscriber: Subscriber, channels: list[str] | None = None) -> None:
        """Subscribe to `channels` (all when None) and queue the backlog of each new one first."""
        wanted = {ALL} if channels is None else set(channels)
        before = self._channels_of.get(subscriber, set())
        for channel in before - wanted:
            self._subscribers[channel].discard(subscriber)
        for channel in wanted - before:
            self._subscribers[channel].add(subscriber)
        self._channels_of[subscriber] = wanted
        for channel in self.channels():
            had = channel in before or ALL in before
            if not had and (channel in wanted or ALL in wanted):
                for envelope in self.backlog(channel):
                    subscriber.offer(envelope)

    def leave(self, subscriber: Subscriber) -> None:
        for channel in self._channels_of.pop(subscriber, set()):
            self._subscribers[channel].discard(subscriber)

    def close_all(self, code: int, reason: str) -> None:
        for subscriber in self.sessions():
            subscriber.close(code, reason)

    def publish(self, envelope: Envelope) -> bool:
        """A live envelope: fan it out if it is newer than the last one sent; True if it was."""
        if not self._fan_out(envelope):
            return False
        snapshot = self._snapshot.get(envelope.channel)
        if snapshot is None or envelope.seq > snapshot.seq:
            tail = self._tail[envelope.channel]
            tail.append(envelope)
            if len(tail) > self.max_tail:
                # Only when snapshot reads keep failing: joining sessions then miss the oldest
                # changes until the next snapshot arrives, memory stays bounded.
                if envelope.channel not in self._overflowing:
                    log.warning("channel %s: over %d live envelopes without a newer snapshot",
                                envelope.channel, self.max_tail)
                    self._overflowing.add(envelope.channel)
                tail.popleft()
        return True

    def snapshot(self, envelope: Envelope) -> bool:
        """A full snapshot: keep it for joining sessions; fan it out if sessions lack it. True if kept."""
        current = self._snapshot.get(envelope.channel)
        if current is not None and envelope.seq <= current.seq:
            return False
        self._fan_out(envelope)
        self._snapshot[envelope.channel] = envelope
        self._overflowing.discard(envelope.channel)
        tail = self._tail[envelope.channel]
        while tail and tail[0].seq <= envelope.seq:
            tail.popleft()
        return True

    def load_snapshots(self, envelopes: list[Envelope]) -> None:
        """Every snapshot, as read from Redis at start or after a reconnect.

        A snapshot newer than what sessions have is sent to them (it covers
        whatever pub/sub dropped while disconnected). A channel whose snapshot
        is gone, or numbered lower than what was sent, means Redis lost its
        data (restarted without persistence) and the numbering starts again:
        the hub forgets those channels and resets every session, which
        reconnects and starts over from the snapshots.
        """
        fresh = {e.channel: e for e in envelopes}
        lost = [c for c, seq in self._sent.items() if c not in fresh or fresh[c].seq < seq]
        if lost:
            log.warning("redis lost channels %s (numbering restarted): resetting %d clients",
                        ", ".join(sorted(lost)), self.clients)
            for channel in lost:
                self._snapshot.pop(channel, None)
                self._tail.pop(channel, None)
                self._sent.pop(channel, None)
            for subscriber in self.sessions():
                subscriber.reset("snapshot numbering restarted")
        for envelope in fresh.values():
            self.snapshot(envelope)

    def _fan_out(self, envelope: Envelope) -> bool:
        sent = self._sent.get(envelope.channel)
        if sent is not None and envelope.seq <= sent:
            return False
        self._sent[envelope.channel] = envelope.seq
        targets = self._subscribers.get(envelope.channel, set()) | self._subscribers.get(ALL, set())
        for subscriber in list(targets):
            subscriber.offer(envelope)
        return True
