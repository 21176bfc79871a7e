"""Gap-free resume: epochs, the history in Redis, and several push server processes on one Redis.

The end-to-end tests run the real writer (the orders job's sink and its Lua
script) against a private redis-server, and real `python -m push_server`
processes on free ports; WebSocket clients connect as the page does, with a
token, and resume with the ``since`` query parameter. What decides between a
replay and a snapshot is tested on the hub alone in test_push_hub.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jobs.checkpoint import Batch
from jobs.orders_sink import MinuteTotal, OrdersSink
from push_server.tokens import Tokens
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, snapshot_key
from stack.testing import free_port
from waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "resumetest"
TODAY = "2026-11-30"
SECRET = "0123456789abcdef" * 4
CHANNELS = (ORDERS_TODAY, ORDERS_PER_MINUTE)


# --- the writer, the push server processes, the clients ---

class Writer:
    """The orders job's sink: batch n adds one order in its own minute, so every per-minute delta differs."""

    def __init__(self, url: str, history_size: int):
        self.client = redis.Redis.from_url(url)
        self.sink = OrdersSink(self.client, PREFIX, history_size=history_size, history_seconds=600)
        self.batches = 0

    def write(self, count: int = 1) -> None:
        for _ in range(count):
            n = self.batches
            self.sink.apply(Batch("q", n, ""), TODAY, [MinuteTotal(TODAY, f"10:{n:02d}", 1, 100 + n)])
            self.batches += 1

    def snapshot(self, channel: str) -> dict:
        return json.loads(self.client.get(snapshot_key(PREFIX, channel)))


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return json.loads(response.read())
    except OSError:
        return None


class PushProcesses:
    """`python -m push_server` processes on free ports, all on one Redis; stopped by `stop_all`."""

    def __init__(self, redis_url: str, home: Path):
        self.redis_url = redis_url
        self.home = home
        self.procs: list[tuple[subprocess.Popen, int, Path]] = []

    def start(self, history_size: int) -> int:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTDASH_")}
        env.update(RTDASH_PUSH_PORT=str(port), RTDASH_REDIS_URL=self.redis_url, RTDASH_REDIS_PREFIX=PREFIX,
                   RTDASH_HOME=str(self.home), RTDASH_PUSH_TOKEN_SECRET=SECRET,
                   RTDASH_PUSH_HISTORY_SIZE=str(history_size), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        log = self.home / f"push-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "push_server"], cwd=self.home, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, port, log))

        def connected() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the push server exited:\n{log.read_text()}")
            state = health(port)
            return state is not None and state["redis_connected"]

        eventually(connected, timeout=30, interval=0.1, what=f"the push server on {port} connected to Redis")
        return port

    def stop_all(self) -> None:
        for proc, _, log in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, log in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def stack(push_redis, tmp_path):
    """(start a push server process -> port, the Redis URL); every process stopped at the end."""
    processes = PushProcesses(push_redis.url, tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


def has_seen(port: int, seq: int) -> bool:
    """Whether the process on `port` has fanned out `seq` on both order channels."""
    state = health(port)
    return state is not None and all(state["channels"].get(c) == seq for c in CHANNELS)


class Client:
    """A dashboard client: what it received, and each channel's state as the page keeps it."""

    def __init__(self):
        self.received: list[str] = []
        self.state: dict[str, dict] = {}
        self.position: dict[str, dict] = {}
        self.ws = None

    async def connect(self, port: int, resume: bool = False) -> Client:
        url = f"ws://127.0.0.1:{port}/ws?token={Tokens(SECRET.encode()).issue(ttl=600)}"
        if resume:
            url += "&since=" + quote(json.dumps(self.position))
        self.ws = await websocket_connect(HTTPRequest(url, headers={"Origin": f"http://127.0.0.1:{port}"}))
        return self

    async def take_until(self, seq: int) -> list[dict]:
        """Envelopes until both order channels are at `seq`, each applied to the state as the page applies it."""
        out = []
        while any(self.position.get(c, {}).get("seq") != seq for c in CHANNELS):
            text = await asyncio.wait_for(self.ws.read_message(), 10)
            assert text is not None, f"closed with {self.ws.close_code}"
            envelope = json.loads(text)
            self.received.append(text)
            self.apply(envelope)
            out.append(envelope)
        return out

    def apply(self, envelope: dict) -> None:
        channel, data = envelope["channel"], envelope["data"]
        had = self.state.get(channel)
        if (channel == ORDERS_PER_MINUTE and not envelope.get("snapshot") and had is not None
                and had["date"] == data["date"]):
            data = {**data, "minutes": {**had["minutes"], **data["minutes"]}}
        self.state[channel] = data
        self.position[channel] = {"epoch": envelope["epoch"], "seq": envelope["seq"]}

    async def closed(self) -> int:
        """Read until the server closes the socket; its close code."""
        while await asyncio.wait_for(self.ws.read_message(), 10) is not None:
            pass
        return self.ws.close_code


def marked(envelopes: list[dict]) -> set[tuple[str, int, bool]]:
    return {(e["channel"], e["seq"], bool(e.get("snapshot"))) for e in envelopes}


def minutes(envelopes: list[dict]) -> list[str]:
    """The minutes the per-minute envelopes carry, in the order received."""
    return [m for e in envelopes if e["channel"] == ORDERS_PER_MINUTE for m in e["data"]["minutes"]]


# --- end to end ---

@pytest.mark.timeout(120)
def test_a_client_resumes_with_exactly_what_it_missed_on_the_same_or_another_process(stack, push_redis):
    writer = Writer(push_redis.url, history_size=300)
    first, second = stack.start(300), stack.start(300)

    async def scenario():
        client = await Client().connect(first)
        writer.write(3)
        await client.take_until(3)
        client.ws.close()
        writer.write(3)                                   # 4..6 (minutes 10:03-10:05) while the client is away
        eventually(lambda: has_seen(first, 6) and has_seen(second, 6), what="both processes at seq 6")

        resumed = {}
        for port in (first, second):
            again = resumed[port] = Client()
            again.state, again.position = dict(client.state), dict(client.position)
            await again.connect(port, resume=True)
            missed = await again.take_until(6)
            # Only live envelopes after seq 3, in order, of the same epoch: no snapshot. A session
            # queue may merge a channel's envelopes into one (the latest seq, a per-minute channel's
            # minutes of all of them), so the check is on what they carry: every missed minute once,
            # and none the client had.
            assert not any(e.get("snapshot") for e in missed)
            for channel in CHANNELS:
                numbers = [e["seq"] for e in missed if e["channel"] == channel]
                assert numbers == sorted(set(numbers)) and numbers[0] > 3 and numbers[-1] == 6, numbers
            for envelope in missed:
                assert envelope["epoch"] == client.position[envelope["channel"]]["epoch"]
            assert sorted(set(minutes(missed))) == ["10:03", "10:04", "10:05"]
            # the deltas on top of what the client had give exactly the state a fresh page gets
            for channel in CHANNELS:
                assert again.state[channel] == writer.snapshot(channel)["data"]
        # the same texts from both processes: same epochs, seqs and data
        assert resumed[first].received == resumed[second].received
        writer.write()                                    # and the live stream goes on at 7, nothing between
        for again in resumed.values():
            assert marked(await again.take_until(7)) == {(c, 7, False) for c in CHANNELS}
            again.ws.close()

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_a_resume_the_history_no_longer_reaches_gets_a_marked_snapshot(stack, push_redis):
    writer = Writer(push_redis.url, history_size=2)
    port = stack.start(2)

    async def scenario():
        client = await Client().connect(port)
        writer.write()
        await client.take_until(1)
        client.ws.close()
        writer.write(5)                                   # the history keeps only 5 and 6
        eventually(lambda: has_seen(port, 6), what="the process at seq 6")
        await client.connect(port, resume=True)
        got = await client.take_until(6)
        assert marked(got) == {(c, 6, True) for c in CHANNELS} and len(got) == 2
        for channel in CHANNELS:
            assert client.state[channel] == writer.snapshot(channel)["data"]
        assert len(client.state[ORDERS_PER_MINUTE]["minutes"]) == 6
        client.ws.close()
        # a malformed position is refused with 1003 and the reason
        client.position = {ORDERS_TODAY: {"epoch": "", "seq": -1}}
        await client.connect(port, resume=True)
        assert await client.closed() == 1003 and client.ws.close_reason.startswith("since must be")

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_after_redis_lost_its_data_the_epoch_changes_and_a_resume_gets_a_marked_snapshot(stack, push_redis):
    writer = Writer(push_redis.url, history_size=300)
    port = stack.start(300)

    async def scenario():
        client = await Client().connect(port)
        writer.write(3)
        await client.take_until(3)
        old = {c: client.position[c]["epoch"] for c in CHANNELS}
        writer.client.flushall()
        writer.write()                                    # seq 1 of a new epoch on both channels
        for channel in CHANNELS:
            assert writer.snapshot(channel)["seq"] == 1 and writer.snapshot(channel)["epoch"] != old[channel]
        assert await client.closed() == 1012              # the open connection is told to start over
        eventually(lambda: has_seen(port, 1), what="the process on the new epochs")
        await client.connect(port, resume=True)
        got = await client.take_until(1)
        assert marked(got) == {(c, 1, True) for c in CHANNELS} and len(got) == 2
        for envelope in got:
            assert envelope["epoch"] == writer.snapshot(envelope["channel"])["epoch"] != old[envelope["channel"]]
            assert client.state[envelope["channel"]] == writer.snapshot(envelope["channel"])["data"]
        writer.write()                                    # and the new epoch's live stream follows
        assert marked(await client.take_until(2)) == {(c, 2, False) for c in CHANNELS}
        client.ws.close()

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_two_processes_give_identical_streams(stack, push_redis):
    writer = Writer(push_redis.url, history_size=300)
    writer.write(2)                                       # snapshots exist before the clients join
    ports = stack.start(300), stack.start(300)

    async def scenario():
        clients = [await Client().connect(port) for port in ports]
        for client in clients:
            assert marked(await client.take_until(2)) == {(c, 2, True) for c in CHANNELS}
        for seq in range(3, 8):
            writer.write()
            for client in clients:
                assert marked(await client.take_until(seq)) == {(c, seq, False) for c in CHANNELS}
        for client in clients:
            client.ws.close()
        assert clients[0].received == clients[1].received and len(clients[0].received) == 12
        for envelope in map(json.loads, clients[0].received):
            assert envelope["epoch"] == writer.snapshot(envelope["channel"])["epoch"]

    asyncio.run(scenario())
