"""The hub: fan-out, snapshots for joining sessions, seq order, Redis losing its data."""
from __future__ import annotations

import json

from push_server.hub import Hub
from push_server.protocol import parse_envelope


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
    assert client.closed == (1012, "snapshot numbering restarted")
    assert hub.latest("orders.today").seq == 1 and hub.latest("orders.per_minute") is None


def test_a_channel_missing_after_reconnect_accepts_restarted_numbering():
    hub = Hub()
    hub.load_snapshots([env("orders.today", 40)])
    hub.load_snapshots([])                            # Redis came back empty
    assert hub.publish(env("orders.today", 1)) is True
    assert hub.channels() == ["orders.today"] and hub.last_seq("orders.today") == 1
