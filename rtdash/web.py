"""What rtdash's small JSON HTTP services share: JSON replies, errors as ``{"error": reason}``."""
from __future__ import annotations

from typing import Any

import tornado.web


class ApiError(tornado.web.HTTPError):
    """A refusal the client caused; `message` goes into the JSON body (kept out of Tornado's log format string)."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = message


class JsonHandler(tornado.web.RequestHandler):
    """Replies are JSON and never cached; an error reply says why in ``{"error": ...}``.

    The reason is an `ApiError`'s message, else a client error's HTTPError message or its
    reason phrase; a server error says only "internal error" (the details go to the log).
    """

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif status_code >= 500:
            message = "internal error"
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = self._reason
        self.finish({"error": message})
