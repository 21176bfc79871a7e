"""The baseline of bench.notify_throughput: a bare Tornado app on one port.

POST on any path reads the body and answers ``success`` (text/plain, like the
order service); GET /healthz answers ok. Nothing else: what the order service
does beyond this (form parsing, signature check, SQLite transaction, logging,
the outbox relay) is what the benchmark compares against.

    .venv/bin/python -m bench.bare_server --port 18001
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import tornado.web


class BareHandler(tornado.web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    async def post(self, _path: str) -> None:
        _ = self.request.body
        self.finish("success")


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "service": "bare"})


async def main(host: str, port: int) -> None:
    app = tornado.web.Application([(r"/healthz", HealthHandler), (r"(/.*)", BareHandler)])
    server = app.listen(port, address=host, max_body_size=65536)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await server.close_all_connections()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
