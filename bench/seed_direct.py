"""The seed's direct path, for bench.e2e_latency to compare against: no Kafka, no Spark.

As the essay's second stage (shared/seed-essay.md, "feature/v0.2_pubsub"): one
Tornado app whose payment callback writes the order to SQLite, answers, and
then counts and sums the orders table and PUBLISHes the totals on a Redis
channel; a Redis listener thread forwards each message to every WebSocket
client. Like the seed it does not verify the notify's signature and keeps no
history, epoch or sequence; it does read the same signed form the order
service reads, so the client side (bench.e2e_latency's payment simulator) is
the same. The place-order call of the simulator is answered without work.

    .venv/bin/python -m bench.seed_direct --port P --redis URL --database PATH [--channel C]

Messages: ``{"cnt": paid orders, "amount": cents}``, the latest one sent to a client that connects.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import threading

import redis
import tornado.ioloop
import tornado.web
import tornado.websocket

from rtdash.payments import NOTIFY_PATH


class Seed:
    """What the seed's module-level globals were: the database, the Redis client, the clients, the latest message."""

    def __init__(self, database: str, redis_url: str, channel: str):
        self.db = sqlite3.connect(database)
        self.db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
        self.redis = redis.Redis.from_url(redis_url)
        self.channel = channel
        self.clients: list[tornado.websocket.WebSocketHandler] = []
        self.latest = json.dumps({"cnt": 0, "amount": 0})


class CallbackHandler(tornado.web.RequestHandler):
    """The payment callback: database write, reply, then the totals to Redis."""

    def initialize(self, seed: Seed) -> None:
        self.seed = seed

    def post(self) -> None:
        order_id = self.get_argument("out_trade_no")
        amount = round(float(self.get_argument("total_amount")) * 100)
        db = self.seed.db
        new = db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is None
        if new:
            db.execute("INSERT INTO orders (id, amount) VALUES (?, ?)", (order_id, amount))
            db.commit()
        self.finish("success")
        if new:
            cnt, total = db.execute("SELECT count(*), coalesce(sum(amount), 0) FROM orders").fetchone()
            self.seed.redis.publish(self.seed.channel, json.dumps({"cnt": cnt, "amount": total}))


class PlaceHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.finish({"placed": True})


class SocketHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, seed: Seed) -> None:
        self.seed = seed

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.seed.clients.append(self)
        self.write_message(self.seed.latest)

    def on_close(self) -> None:
        if self in self.seed.clients:
            self.seed.clients.remove(self)


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "service": "seed_direct"})


def listen_redis(seed: Seed, loop: tornado.ioloop.IOLoop) -> None:
    """The seed's redis_listener thread; writes happen on the IOLoop (Tornado is not thread-safe)."""
    pubsub = seed.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(seed.channel)

    def forward(data: str) -> None:
        seed.latest = data
        for client in list(seed.clients):
            client.write_message(data)

    for message in pubsub.listen():
        loop.add_callback(forward, message["data"].decode())


async def main(args: argparse.Namespace) -> None:
    seed = Seed(args.database, args.redis, args.channel)
    app = tornado.web.Application([(NOTIFY_PATH, CallbackHandler, dict(seed=seed)),
                                   (r"/internal/.*", PlaceHandler),
                                   (r"/ws", SocketHandler, dict(seed=seed)),
                                   (r"/healthz", HealthHandler)])
    app.listen(args.port, address="127.0.0.1")
    threading.Thread(target=listen_redis, args=(seed, tornado.ioloop.IOLoop.current()), daemon=True).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--channel", default="bench:seed:orders")
    asyncio.run(main(parser.parse_args()))
