"""The hub: fan-out, snapshots for joining sessions, seq order, Redis losing its data."""
from __future__ import annotations

import json

from push_server.hub import RESTARTED, Hub
from push_server.protocol import Position, encode_envelope, parse_envelope


def env(channel: str, seq: int, **data):
    return parse_envelope(json.dumps({"channel": channel, "seq": seq, "data": data}))


class Recorder:
    def __init__(self):
        self.got: list[tuple[str, int, dict]] = []
        self.closed: tuple[int, str] | None = None

    def offer(self, envelope):
        self.got.append((envelope.channel, envelope.seq, json.loads(envelope.text)["data"]))

    def reset(self, reason):
        self.close(1012, reason)

    def close(self, code, reason):
        self.closed = (code, reason)

    def seqs(self):
        return [(channel, seq) for channel, seq, _ in self.got]


def test_joining_session_gets_snapshots_first_then_only_newer_envelopes():
    hub = Hub()
    hub.load_snapshots([env("orders.today", 3, count=1), env("orders.per_minute", 7)])
    client = Recorder()
    hub.join(client)
    assert client.seqs() == [("orders.per_minute", 7), ("orders.today", 3)]
    assert hub.publish(env("orders.today", 3)) is False      # repeated
    assert hub.publish(env("orders.today", 2)) is False      # stale
    assert hub.publish(env("orders.today", 4, count=2)) is True
    assert client.got[-1] == ("orders.today", 4, {"count": 2})
    hub.leave(client)
    hub.publish(env("orders.today", 5))
    assert client.seqs()[-1] == ("orders.today", 4) and hub.clients == 0


def test_late_joiner_gets_the_full_snapshot_not_the_last_partial_update():
    hub = Hub()
    full = {"10:00": {"count": 1}, "10:01": {"count": 1}}
    hub.snapshot(env("orders.per_minute", 1, minutes=full))
    early = Recorder()
    hub.join(early)
    hub.publish(env("orders.per_minute", 2, minutes={"10:01": {"count": 2}}))          # live: what changed
    late = Recorder()
    hub.join(late)
    # Before the snapshot of seq 2 is read, a joiner gets snapshot 1 and the change after it.
    assert late.got == [("orders.per_minute", 1, {"minutes": full}),
                        ("orders.per_minute", 2, {"minutes": {"10:01": {"count": 2}}})]
    hub.snapshot(env("orders.per_minute", 2, minutes={**full, "10:01": {"count": 2}}))  # read after the live one
    latest = Recorder()
    hub.join(latest)
    assert latest.got == [("orders.per_minute", 2, {"minutes": {"10:00": {"count": 1}, "10:01": {"count": 2}}})]
    # Sessions already up to date do not get seq 2 twice.
    assert early.seqs() == [("orders.per_minute", 1), ("orders.per_minute", 2)]
    assert late.seqs() == [("orders.per_minute", 1), ("orders.per_minute", 2)]


def test_a_snapshot_newer_than_what_was_sent_is_fanned_out():
    hub = Hub()
    client = Recorder()
    hub.join(client)
    hub.publish(env("orders.today", 1, count=1))
    hub.load_snapshots([env("orders.today", 4, count=9)])    # live 2..3 were lost while Redis was away
    hub.publish(env("orders.today", 4, count=9))              # the publish racing the snapshot read
    assert client.seqs() == [("orders.today", 1), ("orders.today", 4)]


def test_live_tail_is_bounded():
    hub = Hub(max_tail=3)
    hub.snapshot(env("c", 1))
    for seq in range(2, 10):
        hub.publish(env("c", seq))
    assert [e.seq for e in hub.backlog("c")] == [1, 7, 8, 9]


def test_subscribe_narrows_channels_and_sends_new_snapshots_only():
    hub = Hub()
    hub.load_snapshots([env("orders.today", 1), env("orders.per_minute", 1)])
    client = Recorder()
    hub.join(client, ["orders.per_minute"])
    hub.publish(env("orders.today", 2))
    hub.publish(env("orders.per_minute", 2))
    assert client.seqs() == [("orders.per_minute", 1), ("orders.per_minute", 2)]
    hub.join(client, ["orders.per_minute", "orders.today"])
    assert client.seqs()[-1] == ("orders.today", 2)           # the newly subscribed channel's snapshot
    hub.join(client, ["orders.today"])
    hub.publish(env("orders.per_minute", 3))
    assert client.seqs()[-1] == ("orders.today", 2)


def test_snapshot_numbering_going_back_resets_every_client():
    hub = Hub()
    client = Recorder()
    hub.join(client)
    hub.load_snapshots([env("orders.today", 10), env("orders.per_minute", 3)])
    hub.load_snapshots([env("orders.today", 12), env("orders.per_minute", 3)])   # newer: sent like live
    assert client.seqs() == [("orders.today", 10), ("orders.per_minute", 3), ("orders.today", 12)]
    assert client.closed is None
    hub.load_snapshots([env("orders.today", 1)])      # Redis lost its data: start over
    assert client.closed == (1012, "channel stream restarted")
    assert hub.latest("orders.today").seq == 1 and hub.latest("orders.per_minute") is None


def test_a_channel_missing_after_reconnect_accepts_restarted_numbering():
    hub = Hub()
    hub.load_snapshots([env("orders.today", 40)])
    hub.load_snapshots([])                            # Redis came back empty
    assert hub.publish(env("orders.today", 1)) is True
    assert hub.channels() == ["orders.today"] and hub.last_seq("orders.today") == 1


# --- resume: a replay from the history, or the snapshot ---

class Marks(Recorder):
    """Records (channel, seq, marked as a snapshot)."""

    def offer(self, envelope):
        self.got.append((envelope.channel, envelope.seq, envelope.snapshot))


def stream(seq: int, epoch: str = "e1", snapshot: bool = False, channel: str = "c"):
    return parse_envelope(encode_envelope(channel, seq, {"n": seq}, epoch=epoch, snapshot=snapshot))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hub_at(seq: int, clock: Clock | None = None, **bounds) -> Hub:
    """A hub that got snapshot 1 and live envelopes 2..seq."""
    hub = Hub(clock=clock or Clock(), **bounds)
    hub.snapshot(stream(1, snapshot=True))
    for n in range(2, seq + 1):
        hub.publish(stream(n))
        hub.snapshot(stream(n, snapshot=True))
    return hub


def test_the_hub_replays_only_a_complete_run_of_the_same_epoch_within_the_bounds():
    clock = Clock()
    hub = hub_at(6, clock, history_size=3, history_seconds=60)
    assert [e.seq for e in hub.history("c")] == [4, 5, 6]
    cases = {Position("e1", 3): [("c", 4, False), ("c", 5, False), ("c", 6, False)],
             Position("e1", 6): [],                                  # up to date
             Position("e1", 2): [("c", 6, True)],                    # the history does not reach back
             Position("e0", 3): [("c", 6, True)],                    # another epoch
             Position("", 3): [("c", 6, True)]}
    for position, expected in cases.items():
        client = Marks()
        hub.join(client, since={"c": position})
        assert client.got == expected, position
    clock.now += 61                                                   # all of it older than the age bound
    client = Marks()
    hub.join(client, since={"c": Position("e1", 5)})
    assert client.got == [("c", 6, True)]


def test_a_gap_in_the_history_gets_a_snapshot():
    hub = hub_at(3)
    hub.snapshot(stream(5, snapshot=True))                               # live 4 and 5 never came
    hub.publish(stream(6))
    for since, expected in ((3, [("c", 5, True), ("c", 6, False)]), (5, [("c", 6, False)])):
        client = Marks()
        hub.join(client, since={"c": Position("e1", since)})
        assert client.got == expected


def test_a_client_ahead_of_this_process_gets_nothing_it_already_has():
    hub = hub_at(3)
    client = Marks()
    hub.join(client, since={"c": Position("e1", 5)})                  # another process had sent it 4 and 5
    for n in (4, 5, 6):
        hub.publish(stream(n))
    assert client.got == [("c", 6, False)]
    hub.leave(client)
    assert not hub._ahead


def test_a_snapshot_of_a_new_epoch_restarts_the_channel_and_resets_its_sessions():
    hub = hub_at(3)
    other = hub_at(1)
    client, bystander = Marks(), Marks()
    hub.join(client)
    hub.join(bystander, ["d"])
    assert hub.publish(stream(1, epoch="e2")) is False                   # a live one of the new epoch waits...
    assert hub.snapshot(stream(1, epoch="e2", snapshot=True)) is True    # ...for its snapshot
    assert client.closed == (1012, RESTARTED) and bystander.closed is None
    assert hub.epoch("c") == "e2" and hub.last_seq("c") == 1 and hub.history("c") == []
    assert hub.publish(stream(4, epoch="e1")) is False                   # a late one of the old epoch
    assert hub.publish(stream(2, epoch="e2")) is True
    assert other.epoch("c") == "e1"


def test_histories_read_from_redis_replace_the_hubs_own():
    hub = Hub(clock=Clock())
    hub.load_snapshots([stream(5, snapshot=True)], {"c": [(999_000.0, stream(n)) for n in (3, 4, 5)]
                                                + [(999_000.0, stream(9, epoch="old"))]})
    assert [e.seq for e in hub.history("c")] == [3, 4, 5]
    client = Marks()
    hub.join(client, since={"c": Position("e1", 2)})
    assert client.got == [("c", 3, False), ("c", 4, False), ("c", 5, False)]


def test_a_snapshot_read_ahead_of_pubsub_is_kept_for_joiners_while_sessions_get_each_live_envelope():
    hub = hub_at(1)
    client = Marks()
    hub.join(client)
    hub.publish(stream(2))
    hub.snapshot(stream(4, snapshot=True), fan_out=False)            # the job wrote 3 and 4 meanwhile
    hub.publish(stream(3))
    hub.publish(stream(4))
    assert client.got == [("c", 1, True), ("c", 2, False), ("c", 3, False), ("c", 4, False)]
    late = Marks()
    hub.join(late)
    assert late.got == [("c", 4, True)]
