"""What rtdash's small JSON HTTP services share: JSON replies, errors as ``{"error": reason}``."""
from __future__ import annotations

from typing import Any

import tornado.web


class JsonHandler(tornado.web.RequestHandler):
    """Replies are JSON; an error reply says why in ``{"error": ...}`` (the HTTPError's message, else its reason)."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else self._reason
        self.finish({"error": message})
