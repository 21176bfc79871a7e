"""Several Tornado apps served on free ports inside one AsyncTestCase."""
from __future__ import annotations

from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port


class ServedApps:
    """Mixin for AsyncTestCase: `serve(app)` gives its base URL; `stop_servers()` in tearDown."""

    def serve(self, app) -> str:
        sock, port = bind_unused_port()
        server = HTTPServer(app)
        server.add_sockets([sock])
        self.__dict__.setdefault("_servers", []).append(server)
        return f"http://127.0.0.1:{port}"

    def stop_servers(self) -> None:
        for server in self.__dict__.pop("_servers", []):
            server.stop()
