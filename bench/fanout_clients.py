"""The load clients of bench.fanout: one process holding many light WebSocket connections.

Each connection is a bare asyncio protocol (uvloop): an HTTP upgrade, then
server frames parsed straight from the bytes (the server neither masks nor
fragments them), pings answered, nothing else. A text frame counts as one
message delivered; its latency is the receive time minus the publish time the
envelope carries in ``data.t`` (both from this machine's clock).

Driven by bench.fanout over stdin/stdout, one JSON object a line: the
process prints {"ready": n} once its connections are open, then obeys
"start" (count from now), "stop" (print what was counted) and "quit";
`LoadClients` is that driver's side.

    .venv/bin/python -m bench.fanout_clients --port 8888 --connections 500 --path '/ws'
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import uvloop

BUCKET_MS = 0.5   # latency histogram resolution
ROOT = Path(__file__).resolve().parents[1]


class Tally:
    """What every connection of the process saw since "start"."""

    def __init__(self) -> None:
        self.counting = False
        self.messages = 0
        self.latency = Counter()   # bucket -> messages
        self.last_part = Counter() # the same, from "last part" on: does latency grow during the window?
        self.closes = Counter()    # close code -> connections

    def seen(self, sent_at: float, now: float, n: int = 1) -> None:
        self.messages += n
        bucket = int((now - sent_at) * 1000 / BUCKET_MS)
        self.latency[bucket] += n
        if self.last_part is not None:
            self.last_part[bucket] += n


class Client(asyncio.Protocol):
    """One WebSocket connection that reads every frame and records what it delivers."""

    def __init__(self, tally: Tally, request: bytes, opened: asyncio.Future, stalled: bool = False):
        self.tally = tally
        self.stalled = stalled
        self.request = request
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the upgrade"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[:end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
            if self.stalled:        # never reads again: what the server sends piles up
                self.transport.pause_reading()
                return
        self.frames(time.time())

    def frames(self, now: float) -> None:
        buffer, tally, at = self.buffer, self.tally, 0
        size = len(buffer)
        while size - at >= 2:
            opcode, length, head = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(buffer[at + 2:at + 4], "big"), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(buffer[at + 2:at + 10], "big"), 10
            if size - at < head + length:
                break
            start, at = at + head, at + head + length
            if opcode == 1:
                if tally.counting:
                    t = buffer.find(b'"t":', start, at)
                    if t >= 0:
                        end = t + 4
                        while buffer[end] not in b",}":
                            end += 1
                        tally.seen(float(buffer[t + 4:end]), now)
            elif opcode == 9:
                self.send(0xA, bytes(buffer[start:at]))
            elif opcode == 8:
                code = int.from_bytes(buffer[start:start + 2], "big") if length >= 2 else 1005
                tally.closes[code] += 1
                self.send(0x8, bytes(buffer[start:start + 2]))
                self.transport.close()
        del buffer[:at]

    def send(self, opcode: int, payload: bytes) -> None:
        """A client frame: masked, as RFC 6455 requires of clients."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


async def connect_all(host: str, port: int, path: str, origin: str, count: int, tally: Tally,
                      stalled: bool = False, at_once: int = 50) -> list[Client]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(at_once)
    clients: list[Client] = []

    async def one() -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n").encode()
        async with gate:
            opened = loop.create_future()
            _, client = await loop.create_connection(lambda: Client(tally, request, opened, stalled), host, port)
            await asyncio.wait_for(opened, 30)
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(count)))
    return clients


class LoadClients:
    """`procs` processes of bench.fanout_clients holding `connections` connections between them."""

    def __init__(self, port: int, path: str, connections: int, procs: int, *, stalled: bool = False):
        shares = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        argv = [sys.executable, "-m", "bench.fanout_clients", "--port", str(port), "--path", path]
        self.procs = [subprocess.Popen([*argv, "--connections", str(n), *(["--stalled"] if stalled else [])],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                      for n in shares if n]

    def ready(self) -> int:
        total = 0
        for proc in self.procs:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a load client exited with code {proc.wait()} while connecting")
            total += json.loads(line)["ready"]
        return total

    def command(self, word: str) -> list[dict]:
        for proc in self.procs:
            proc.stdin.write(word + "\n")
            proc.stdin.flush()
        return [json.loads(proc.stdout.readline()) for proc in self.procs] if word == "stop" else []

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def main(args: argparse.Namespace) -> None:
    tally = Tally()
    clients = await connect_all(args.host, args.port, args.path, args.origin, args.connections, tally,
                                args.stalled)
    print(json.dumps({"ready": len(clients)}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "start":
            tally.messages, tally.latency, tally.last_part, tally.counting = 0, Counter(), None, True
        elif line == "last part":
            tally.last_part = Counter()
        elif line == "stop":
            tally.counting = False
            open_now = sum(1 for c in clients if not c.transport.is_closing())
            print(json.dumps({"messages": tally.messages, "latency": tally.latency,
                              "last_part": tally.last_part or {}, "open": open_now,
                              "closes": tally.closes}), flush=True)
        elif line == "quit":
            break
    for client in clients:
        client.transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--origin", default=None)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--stalled", action="store_true", help="connections that never read after the upgrade")
    arguments = parser.parse_args()
    arguments.origin = arguments.origin or f"http://{arguments.host}:{arguments.port}"
    uvloop.run(main(arguments))
