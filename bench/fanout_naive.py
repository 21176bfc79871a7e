"""The baseline of bench.fanout: a naive broadcast, in the style the push server started from.

A Tornado WebSocket at /ws (any Origin) and a Redis pub/sub reader on the
standard asyncio loop; each live envelope goes to every client with
``for client in clients: client.write_message(message)``: no queue, no
coalescing, no limit, no garbage-collector tuning. /healthz answers ok.

    .venv/bin/python -m bench.fanout_naive --port 18888 --redis redis://127.0.0.1:6379/0 --pattern 'rtdash:live:*'
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import redis.asyncio as aioredis
import tornado.web
import tornado.websocket

clients: set[tornado.websocket.WebSocketHandler] = set()


class BroadcastSocket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        clients.add(self)

    def on_close(self) -> None:
        clients.discard(self)


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "service": "naive", "clients": len(clients)})


async def forward(url: str, pattern: str) -> None:
    client = aioredis.Redis.from_url(url)
    async with client.pubsub() as pubsub:
        await pubsub.psubscribe(pattern)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None:
                continue
            text = message["data"].decode()
            for socket in list(clients):
                try:
                    socket.write_message(text)
                except tornado.websocket.WebSocketClosedError:
                    pass


async def main(host: str, port: int, url: str, pattern: str) -> None:
    app = tornado.web.Application([(r"/ws", BroadcastSocket), (r"/healthz", HealthHandler)])
    server = app.listen(port, address=host, backlog=1024)
    reader = asyncio.get_running_loop().create_task(forward(url, pattern))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    reader.cancel()
    server.stop()
    for socket in list(clients):
        socket.close(1001)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--pattern", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.redis, args.pattern))
