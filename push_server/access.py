"""Who may reach the push server: the Host and Origin allow-lists, tokens, and log lines that never hold a token.

* Host: every page and WebSocket request must name an allowed host
  (RTDASH_ALLOWED_HOSTS, default this server's loopback address at its port):
  a page of another site whose name was made to resolve to this server (DNS
  rebinding) sends its own name and is refused with 403.
* Origin: a browser's WebSocket must come from an allowed origin
  (RTDASH_ALLOWED_ORIGINS); a request without Origin is no browser's (browsers
  always send one on WebSocket) and is judged by its token alone.
* Token: `/ws?token=T` (tokens.py); refused with 401 before the upgrade.

`/ws?token=` puts a token in the request line, so access-log and error lines
of this server show ``token=[redacted]`` instead (`redacted`, `log_request`).
"""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlsplit

import tornado.web

from rtdash.settings import Settings

from .tokens import Tokens

log = logging.getLogger("rtdash.push.access")
access_log = logging.getLogger("tornado.access")

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#]*", re.IGNORECASE)


def redacted(uri: str) -> str:
    """`uri` with the value of any token query parameter replaced."""
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", uri)


def normalise_origin(origin: str) -> str:
    parts = urlsplit(origin.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def _host_and_port(text: str) -> tuple[str, int | None] | None:
    """("name", port or None) of a Host header or allow-list entry; None if it is not one."""
    text = text.strip().lower()
    if not text or any(c in text for c in "/?#@ \t"):
        return None
    try:
        parts = urlsplit("//" + text)
        return (parts.hostname or "", parts.port) if parts.hostname else None
    except ValueError:                       # a port that is no number, or out of range
        return None


class Access:
    """The allow-lists of Host and Origin, and the tokens that open /ws."""

    def __init__(self, *, hosts: list[str], origins: list[str], tokens: Tokens):
        self.hosts = [entry for entry in map(_host_and_port, hosts) if entry is not None]
        if len(self.hosts) != len(hosts):
            raise ValueError(f"bad RTDASH_ALLOWED_HOSTS entry in {hosts}: use host:port, or a host alone")
        self.origins = {normalise_origin(o) for o in origins}
        self.tokens = tokens

    @classmethod
    def from_settings(cls, settings: Settings, tokens: Tokens | None = None) -> Access:
        return cls(hosts=settings.hosts, origins=settings.origins, tokens=tokens or Tokens.from_settings(settings))

    def host_allowed(self, host: str) -> bool:
        """Whether a Host header names this server: an entry's host, at the entry's port if it has one."""
        found = _host_and_port(host)
        if found is None:
            return False
        name, port = found
        return any(name == allowed and (allowed_port is None or port == allowed_port)
                   for allowed, allowed_port in self.hosts)

    def origin_allowed(self, origin: str) -> bool:
        return normalise_origin(origin) in self.origins


class Guarded:
    """For request handlers with an `access` attribute: refuse with a JSON reason, check the Host header."""

    access: Access

    def refuse(self, status: int, error: str, detail: str = "") -> None:
        self.clear_header("Content-Security-Policy")
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="rtdash", error="invalid_token"')
        self.finish(json.dumps({"error": error, "detail": detail}))

    def refused_host(self) -> bool:
        """True, with 403 sent, when the Host header names no allowed host."""
        host = self.request.headers.get("Host", "")
        if self.access.host_allowed(host):
            return False
        log.warning("refused %s from %s: Host %r is not in RTDASH_ALLOWED_HOSTS", self.request.path,
                    self.request.remote_ip, host[:100])
        self.refuse(403, "host not allowed", "open the dashboard at an address in RTDASH_ALLOWED_HOSTS")
        return True

    def _request_summary(self) -> str:
        return f"{self.request.method} {redacted(self.request.uri or '')} ({self.request.remote_ip})"

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)   # its summary is the redacted one above
        else:                                        # not tornado's, which prints the request (and its URI)
            logging.getLogger("tornado.application").error("Uncaught exception %s", self._request_summary(),
                                                           exc_info=(typ, value, tb))


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The application's access log line, as tornado writes it but with any token redacted."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %s (%s) %.2fms", status, handler.request.method,
                   redacted(handler.request.uri or ""), handler.request.remote_ip,
                   1000.0 * handler.request.request_time())
