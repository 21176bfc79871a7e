"""rtdash.logs: a request rejected as malformed is one log line, never a traceback per request."""
from __future__ import annotations

import asyncio
import http.client
import logging
import threading

import tornado.web
from tornado.httputil import HTTPInputError, parse_body_arguments

from rtdash.logs import setup_logging
from stack.testing import free_port


@tornado.web.stream_request_body
class ParsesItsOwnBody(tornado.web.RequestHandler):
    """A streaming handler parses the body itself: tornado reports the HTTPInputError of a bad
    one as an uncaught exception, with a traceback."""

    def prepare(self):
        self.body = b""

    def data_received(self, chunk: bytes) -> None:
        self.body += chunk

    def post(self):
        parse_body_arguments(self.request.headers.get("Content-Type", ""), self.body, {}, {},
                             self.request.headers)
        self.finish("parsed")


def test_a_malformed_body_a_handler_rejects_is_logged_in_one_line(caplog):
    setup_logging()
    caplog.set_level(logging.INFO)
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        return tornado.web.Application([(r"/", ParsesItsOwnBody)]).listen(port, address="127.0.0.1")

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/", body=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
        assert conn.getresponse().status == 500
        conn.close()
    finally:
        async def stop():
            server.stop()
            await server.close_all_connections()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    reports = [r for r in caplog.records if r.name == "tornado.application"]
    assert len(reports) == 1
    report = reports[0]
    assert report.exc_info is None and report.exc_text is None
    assert report.getMessage() == "Uncaught exception POST / (127.0.0.1): malformed request: " \
                                  "Invalid multipart/form-data: multipart boundary not found"
    line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(report)
    assert "\n" not in line and "Traceback" not in line


def test_other_errors_keep_their_traceback(caplog):
    setup_logging()
    try:
        raise ValueError("a bug")
    except ValueError:
        logging.getLogger("tornado.application").error("Uncaught exception GET /", exc_info=True)
    assert caplog.records[-1].exc_info is not None
    try:
        raise HTTPInputError("bad")
    except HTTPInputError:
        logging.getLogger("tornado.general").warning("rejected", exc_info=True)
    assert caplog.records[-1].exc_info is None and caplog.records[-1].getMessage() == \
        "rejected: malformed request: bad"
