"""The hub: which session gets which channel, what a joining session gets first, and resumes.

No I/O here. The broker feeds envelopes in; the hub hands each one to the
sessions of its channel without waiting for any of them (a session has its own
bounded queue).

Two kinds of envelope come in, with one numbering per channel and epoch:

* a *snapshot* (read from ``<prefix>:snapshot:<channel>``) holds the whole
  state of the channel;
* a *live* envelope (from pub/sub) may hold only what changed (for example the
  minutes of ``orders.per_minute`` a batch touched).

So a joining session gets the latest snapshot, then the live envelopes numbered
after it, which brings it to exactly what a session connected all along has.
The live tail is pruned whenever a newer snapshot arrives (the broker reads one
after every live envelope) and is bounded in any case.

A resuming session (`join` with ``since``) instead gets, per channel, the live
envelopes after its position from the channel's *history*: the copy of the
Redis history the broker loads on every (re)connect, extended by each live
envelope as the broker reads it (`record`), bounded by the same size and age.
Every process holds the same history, so any of them resumes a client alike. When the history does not hold
every envelope after the position (too old, a gap) or the epoch is another,
the session gets the snapshot and tail as a joining one does.

Every envelope is fanned out at most once and in increasing ``seq`` per
channel: whatever is not newer than the last one sent (a snapshot re-read
racing a publish, a replayed message) is dropped. A channel's epoch changes
only through a snapshot (a read of Redis, the truth at that moment): a live
envelope of another epoch is either a late one of the old stream or an early
one of the new, whose snapshot the broker reads right after it. On a new
epoch the hub forgets the channel and resets the sessions that had it; they
reconnect and resume, and get that channel's new snapshot.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from typing import Callable, Protocol

from rtdash.channels import HISTORY_SECONDS, HISTORY_SIZE

from . import metrics
from .protocol import Envelope, Position

log = logging.getLogger("rtdash.push.hub")

ALL = "*"  # a session subscribed to ALL gets every channel, including ones that appear later

RESTARTED = "channel stream restarted"


class Subscriber(Protocol):
    def offer(self, envelope: Envelope) -> None: ...
    def reset(self, reason: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Hub:
    """Channels to sessions, plus the epoch, latest snapshot, live tail and history of each channel.

    `history_size` and `history_seconds` bound each channel's history as the jobs bound it in Redis
    (RTDASH_PUSH_HISTORY_SIZE, RTDASH_PUSH_HISTORY_SECONDS); `clock` gives wall-clock seconds (tests).
    """

    def __init__(self, *, max_tail: int = 64, history_size: int = HISTORY_SIZE,
                 history_seconds: float = HISTORY_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.max_tail = max_tail
        self.history_size = history_size
        self.history_ms = history_seconds * 1000
        self.clock = clock
        self._epoch: dict[str, str] = {}
        self._snapshot: dict[str, Envelope] = {}
        self._tail: dict[str, deque[Envelope]] = defaultdict(deque)
        self._history: dict[str, deque[tuple[float, Envelope]]] = {}
        self._sent: dict[str, int] = {}
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._channels_of: dict[Subscriber, set[str]] = {}
        self._ahead: dict[str, dict[Subscriber, int]] = {}   # resumed past what this process has sent
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

    def epoch(self, channel: str) -> str | None:
        """The epoch of the stream the hub follows on `channel`."""
        return self._epoch.get(channel)

    def history(self, channel: str) -> list[Envelope]:
        """The live envelopes of `channel` a resuming session may get, oldest first."""
        return [envelope for _, envelope in self._history.get(channel, ())]

    def backlog(self, channel: str) -> list[Envelope]:
        """What a joining session gets for `channel`: the snapshot, then the live tail after it."""
        snapshot = self._snapshot.get(channel)
        return ([snapshot] if snapshot else []) + list(self._tail.get(channel, ()))

    def join(self, subscriber: Subscriber, channels: list[str] | None = None,
             since: dict[str, Position] | None = None) -> None:
        """Subscribe to `channels` (all when None) and queue what each new one needs first.

        That is the envelopes after the session's position in `since` when the history holds all
        of them, else the channel's backlog (snapshot and tail). Positions of channels the session
        does not get are ignored, and none is kept beyond this call but the rare one ahead of
        this process.
        """
        wanted = {ALL} if channels is None else set(channels)
        before = self._channels_of.get(subscriber, set())
        for channel in before - wanted:
            self._subscribers[channel].discard(subscriber)
            self._forget_ahead(subscriber, channel)
        for channel in wanted - before:
            self._subscribers[channel].add(subscriber)
        self._channels_of[subscriber] = wanted
        for channel in self.channels():
            had = channel in before or ALL in before
            if not had and (channel in wanted or ALL in wanted):
                position = since.get(channel) if since else None
                if position is None or not self._resume(subscriber, channel, position):
                    for envelope in self.backlog(channel):
                        subscriber.offer(envelope)

    def leave(self, subscriber: Subscriber) -> None:
        for channel in self._channels_of.pop(subscriber, set()):
            self._subscribers[channel].discard(subscriber)
        for channel in list(self._ahead):
            self._forget_ahead(subscriber, channel)

    def close_all(self, code: int, reason: str) -> None:
        for subscriber in self.sessions():
            subscriber.close(code, reason)

    def record(self, envelope: Envelope) -> None:
        """A live envelope read from pub/sub, into its channel's history before it is fanned out.

        The broker records every envelope as it reads it but may fan out only the newest of a burst
        (merged with the ones before it, `protocol.coalesce`) when publishes come faster than it
        delivers: resuming sessions still get each envelope they missed, connected ones the latest
        state. One of another epoch than the hub follows is left out, as `publish` leaves it.
        """
        if envelope.epoch == self._epoch.get(envelope.channel, envelope.epoch):
            self._remember(envelope, self.clock() * 1000)

    def publish(self, envelope: Envelope) -> bool:
        """A live envelope: fan it out if it is newer than the last one sent; True if it was."""
        channel = envelope.channel
        epoch = self._epoch.setdefault(channel, envelope.epoch)
        if envelope.epoch != epoch:
            log.debug("channel %s: live envelope of epoch %s while following %s: left to the snapshot read",
                      channel, envelope.epoch, epoch)
            return False
        self._remember(envelope, self.clock() * 1000)
        if not self._fan_out(envelope):
            return False
        snapshot = self._snapshot.get(channel)
        if snapshot is None or envelope.seq > snapshot.seq:
            tail = self._tail[channel]
            tail.append(envelope)
            if len(tail) > self.max_tail:
                # Only when snapshot reads keep failing: joining sessions then miss the oldest
                # changes until the next snapshot arrives, memory stays bounded.
                if channel not in self._overflowing:
                    log.warning("channel %s: over %d live envelopes without a newer snapshot",
                                channel, self.max_tail)
                    self._overflowing.add(channel)
                tail.popleft()
        return True

    def snapshot(self, envelope: Envelope, *, fan_out: bool = True) -> bool:
        """A full snapshot: keep it for joining sessions; fan it out if sessions lack it. True if kept.

        `fan_out=False` when pub/sub is connected and brings every envelope up to this one: sessions
        then get those live envelopes, in order, rather than the snapshot (so every process sends the
        same stream), unless the channel has sent nothing yet. One of another epoch than the hub
        follows starts the channel over (`_restart`).
        """
        channel = envelope.channel
        if channel in self._epoch and envelope.epoch != self._epoch[channel]:
            self._restart(channel, f"epoch {self._epoch[channel] or '(none)'} -> {envelope.epoch or '(none)'}")
        self._epoch[channel] = envelope.epoch
        current = self._snapshot.get(channel)
        if current is not None and envelope.seq <= current.seq:
            return False
        if fan_out or channel not in self._sent:
            self._fan_out(envelope)
        self._snapshot[channel] = envelope
        self._overflowing.discard(channel)
        tail = self._tail[channel]
        while tail and tail[0].seq <= envelope.seq:
            tail.popleft()
        return True

    def load_snapshots(self, envelopes: list[Envelope],
                       histories: dict[str, list[tuple[float, Envelope]]] | None = None) -> None:
        """Every snapshot, and each channel's history as (time in ms, envelope), as read from Redis at
        start or after a reconnect (None: histories unknown, the hub keeps its own).

        A snapshot newer than what sessions have is sent to them (it covers
        whatever pub/sub dropped while disconnected). A channel whose snapshot
        is gone, of another epoch, or numbered lower than what was sent means
        Redis lost its data: the hub forgets the channel and resets the
        sessions that had it; they reconnect and start it over from its
        snapshot.
        """
        fresh = {e.channel: e for e in envelopes}
        for channel in sorted(set(self._sent) | set(self._epoch)):
            envelope = fresh.get(channel)
            if envelope is None or envelope.epoch != self._epoch.get(channel) \
                    or envelope.seq < self._sent.get(channel, 0):
                self._restart(channel, "snapshot gone" if envelope is None else "numbering restarted")
        for envelope in fresh.values():
            self.snapshot(envelope)
        for channel, entries in (histories or {}).items():
            if channel in self._epoch:
                self._history.pop(channel, None)
                for at_ms, envelope in entries:
                    if envelope.channel == channel and envelope.epoch == self._epoch[channel]:
                        self._remember(envelope, at_ms)

    def _restart(self, channel: str, why: str) -> None:
        """Forget everything of `channel` and reset the sessions that get it."""
        targets = self._subscribers.get(channel, set()) | self._subscribers.get(ALL, set())
        log.warning("channel %s restarted (%s): resetting %d clients", channel, why, len(targets))
        for store in (self._epoch, self._snapshot, self._tail, self._history, self._sent, self._ahead):
            store.pop(channel, None)
        self._overflowing.discard(channel)
        for subscriber in list(targets):
            subscriber.reset(RESTARTED)

    def _remember(self, envelope: Envelope, at_ms: float) -> None:
        """Add a live envelope to its channel's history (each seq once, in order), dropping what is over the bounds."""
        if self.history_size <= 0 or self.history_ms <= 0:
            return
        history = self._history.get(envelope.channel)
        if history is None:
            history = self._history[envelope.channel] = deque(maxlen=self.history_size)
        if history and envelope.seq <= history[-1][1].seq:
            return
        history.append((at_ms, envelope))
        oldest = self.clock() * 1000 - self.history_ms
        while history and history[0][0] < oldest:
            history.popleft()

    def _resume(self, subscriber: Subscriber, channel: str, position: Position) -> bool:
        """Offer the envelopes after `position` if the history holds every one of them; False if not."""
        last = self._sent.get(channel)
        if last is None or not position.epoch or position.epoch != self._epoch.get(channel):
            metrics.HISTORY_MISSES.inc()
            return False
        if position.seq >= last:
            # Up to date, or ahead of this process (another one got newer envelopes first):
            # nothing now, and nothing it already has later.
            if position.seq > last:
                self._ahead.setdefault(channel, {})[subscriber] = position.seq
            metrics.HISTORY_HITS.inc()
            return True
        oldest = self.clock() * 1000 - self.history_ms
        # Only up to what was fanned out: recorded envelopes not sent yet reach the session with the fan-out.
        missed = [(at_ms, e) for at_ms, e in self._history.get(channel, ()) if position.seq < e.seq <= last]
        if (not missed or missed[0][0] < oldest
                or [e.seq for _, e in missed] != list(range(position.seq + 1, last + 1))):
            metrics.HISTORY_MISSES.inc()
            return False
        for _, envelope in missed:
            subscriber.offer(envelope)
        metrics.HISTORY_HITS.inc()
        return True

    def _forget_ahead(self, subscriber: Subscriber, channel: str) -> None:
        ahead = self._ahead.get(channel)
        if ahead is not None:
            ahead.pop(subscriber, None)
            if not ahead:
                del self._ahead[channel]

    def _fan_out(self, envelope: Envelope) -> bool:
        channel = envelope.channel
        sent = self._sent.get(channel)
        if sent is not None and envelope.seq <= sent:
            return False
        self._sent[channel] = envelope.seq
        targets = self._subscribers.get(channel, set()) | self._subscribers.get(ALL, set())
        ahead = self._ahead.get(channel)
        if ahead:
            targets = {t for t in targets if ahead.get(t, -1) < envelope.seq}
            for subscriber in [s for s, seq in ahead.items() if seq <= envelope.seq]:
                self._forget_ahead(subscriber, channel)
        for subscriber in list(targets):
            subscriber.offer(envelope)
        return True
