"""Building the GatewayRequest event: one builder, two callers (the proxy and the in-process mixin).

Both callers describe what happened as an `Exchange` (plain facts: times,
sizes, headers, the peer address, a bounded copy of the response body when an
extractor needs it) and `EventBuilder.build` turns it into the contract event
of `rtdash.contracts.GatewayRequest`, applying the privacy rules in one place:

* the client IP is the peer address, or, when the peer is a trusted proxy
  (settings.trusted_proxies, IPs or CIDRs), the right-most address of
  X-Forwarded-For that is not itself a trusted proxy;
* ``visitor_id`` = HMAC-SHA256(daily salt, client IP + User-Agent), where the
  daily salt = HMAC-SHA256(secret, date in settings.tz): stable within a day,
  unlinkable across days and across secrets. The secret is
  settings.visitor_secret, or one generated once under <home>/keys/visitor_secret;
* the raw IP is in the event only with settings.gateway_store_client_ip;
* Authorization, Cookie, Set-Cookie, Proxy-Authorization, the headers that
  carry client addresses (X-Forwarded-For, Forwarded, X-Real-IP, ...: see
  CLIENT_ADDRESS_HEADERS) and settings.gateway_redact_headers are replaced by
  "[redacted]";
* query parameters with a secret-looking name (`secret_query_name`) or one of
  settings.gateway_redact_query keep their name but have their values replaced
  by "[redacted]", in ``query`` and in the query of the Referer (the
  ``referrer`` field and the header). Extractors see the query as it came:
  they pick business fields (the search term of ``q``), not copies;
* ``bot`` is `rtdash.traffic_rules.is_bot` of the User-Agent.

Size: each header value (User-Agent and Referer included) and the search term
keep at most settings.gateway_event_max_chars characters, and so does the
query string as a whole (parameters past the cut are left out); whatever was
cut ends with TRUNCATED. So one request makes an event of bounded size, whatever
it sends (tornado already bounds the request head: 64 KiB by default). The
visitor id and ``bot`` are computed from the whole User-Agent.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote_plus

from rtdash.contracts import GatewayRequest
from rtdash.keys import ensure_secret
from rtdash.settings import Settings
from rtdash.traffic_rules import is_bot

from .extractors import Extractor, default_extractors

log = logging.getLogger("rtdash.gateway.events")

# Headers that carry the address of the client (or of a proxy chain): personal data, and what the
# visitor id hides; the client IP reaches an event only as `client_ip`, with its setting.
# X-Forwarded-Host and X-Forwarded-Proto (the site and scheme asked for) stay in clear.
CLIENT_ADDRESS_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-original-forwarded-for",
                          "true-client-ip", "cf-connecting-ip", "fastly-client-ip", "x-client-ip",
                          "x-cluster-client-ip")
ALWAYS_REDACTED = ("authorization", "cookie", "set-cookie", "proxy-authorization", *CLIENT_ADDRESS_HEADERS)
REDACTED = "[redacted]"
# The end of a value the event keeps only the start of (EventBuilder's max_chars).
TRUNCATED = "…[truncated]"
DEFAULT_MAX_CHARS = 1024
# A query parameter name is secret when, lower-cased with camelCase split at "_", it contains one of
# the first alternatives anywhere, or one of the second as a word (not next to another letter):
# access_token, apiKey, api-key, APIKEY, X-Amz-Signature, client_secret, new_pwd, sig, auth, sessionId,
# PHPSESSID are secret; keyword, monkey, author, design, passenger are not.
SECRET_QUERY_NAME = re.compile(
    r"token|passw|secret|credential|signature|apikey|accesskey|privatekey|sessid|sessionid"
    r"|(?<![a-z])(?:key|sig|auth|authorization|session|pwd|pass|jwt|hmac)(?![a-z])")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
EXTRACTABLE = ("search_term", "result_product_ids", "product_id")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


@dataclass
class Exchange:
    """What one request and its response looked like, as the proxy or a handler saw it."""

    request_id: str
    started_at: datetime
    method: str
    path: str
    query: str                          # the raw query string
    route: str
    status: int
    request_bytes: int                  # request body bytes received
    response_bytes: int                 # response body bytes sent
    total_ms: float
    peer_ip: str                        # the TCP peer (not X-Forwarded-For)
    request_headers: Any                # tornado HTTPHeaders (get, get_all)
    source: str = "proxy"
    upstream_ms: float | None = None
    user_id: str | None = None
    response_body: bytes | None = None  # bounded copy, only when an extractor needs it
    content_encoding: str | None = None
    extras: dict[str, str] | None = None


def cut(value: str, limit: int) -> str:
    """`value`, or its first `limit` characters and TRUNCATED when it is longer."""
    return value if len(value) <= limit else value[:limit] + TRUNCATED


def secret_query_name(name: str) -> bool:
    """True when a query parameter of this name looks like it carries a secret (SECRET_QUERY_NAME)."""
    return SECRET_QUERY_NAME.search(_CAMEL_HUMP.sub("_", name).lower()) is not None


def request_id_from(headers: Mapping[str, str]) -> str:
    """The incoming X-Request-Id when it is a sane token, else a new one."""
    incoming = headers.get("X-Request-Id")
    if incoming and _REQUEST_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


class TrustedProxies:
    """Decides the client IP from the peer address and X-Forwarded-For."""

    def __init__(self, entries: Iterable[str]):
        self.networks = [ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip()]

    def trusts(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """Walk X-Forwarded-For from the right while the hop that added an entry is trusted."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for entry in reversed([e.strip() for e in forwarded_for.split(",")]):
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                break                       # garbage from an untrusted hop: stop at the last good one
            client = entry
            if not self.trusts(entry):
                break
        return client


def load_visitor_secret(settings: Settings) -> bytes:
    """settings.visitor_secret, or the one generated once under <home>/keys/visitor_secret."""
    if settings.visitor_secret:
        return settings.visitor_secret.encode()
    # A secret file: 0600 in a 0700 directory from its first byte, whole or absent (rtdash/keys.py).
    return ensure_secret(Path(settings.keys_dir) / "visitor_secret",
                         lambda: (secrets.token_hex(32) + "\n").encode()).strip()


class VisitorIds:
    """Salted visitor ids; the salt is derived from the secret and the date in `tz`, so it rotates daily."""

    def __init__(self, secret: bytes, tz: tzinfo):
        if not secret:
            raise ValueError("visitor secret must not be empty")
        self.secret = secret
        self.tz = tz
        self._day: date | None = None
        self._salt = b""

    def salt(self, day: date) -> bytes:
        if day != self._day:
            self._salt = hmac.new(self.secret, b"rtdash-visitor-salt:" + day.isoformat().encode(),
                                  hashlib.sha256).digest()
            self._day = day
        return self._salt

    def visitor_id(self, client_ip: str, user_agent: str, at: datetime) -> str:
        salt = self.salt(at.astimezone(self.tz).date())
        msg = client_ip.encode() + b"\n" + user_agent.encode("utf-8", "replace")
        return hmac.new(salt, msg, hashlib.sha256).hexdigest()[:32]


class EventBuilder:
    """Turns an `Exchange` into a GatewayRequest under the privacy settings and extractors."""

    def __init__(self, *, visitors: VisitorIds, trusted: TrustedProxies, store_client_ip: bool = False,
                 redact: Iterable[str] = (), redact_query: Iterable[str] = (),
                 extractors: Sequence[Extractor] | None = None, max_chars: int = DEFAULT_MAX_CHARS):
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, not {max_chars}")
        self.max_chars = max_chars
        self.visitors = visitors
        self.trusted = trusted
        self.store_client_ip = store_client_ip
        self.redact = frozenset(h.lower() for h in (*ALWAYS_REDACTED, *redact))
        self.redact_query = frozenset(n.strip().lower() for n in redact_query if n.strip())
        self.extractors = list(default_extractors() if extractors is None else extractors)

    @classmethod
    def from_settings(cls, settings: Settings, extractors: Sequence[Extractor] | None = None) -> EventBuilder:
        return cls(visitors=VisitorIds(load_visitor_secret(settings), settings.tz),
                   trusted=TrustedProxies(settings.trusted_proxies),
                   store_client_ip=settings.gateway_store_client_ip,
                   redact=settings.gateway_redact_headers,
                   redact_query=settings.gateway_redact_query.split(","), extractors=extractors,
                   max_chars=settings.gateway_event_max_chars)

    def needs_body(self, route: str, path: str) -> bool:
        """True when an extractor of this request reads the response body (so keep a copy)."""
        return any(e.needs_body and e.applies(route, path) for e in self.extractors)

    def client_ip(self, peer: str, headers: Any) -> str:
        return self.trusted.client_ip(peer, _joined(headers, "X-Forwarded-For"))

    def build(self, ex: Exchange) -> GatewayRequest:
        headers = ex.request_headers
        client_ip = self.client_ip(ex.peer_ip, headers)
        user_agent = headers.get("User-Agent")
        query = parse_qs(ex.query, keep_blank_values=True) if ex.query else {}
        fields: dict[str, Any] = {}
        extras = dict(ex.extras or {})
        for extractor in self.extractors:
            if not extractor.applies(ex.route, ex.path):
                continue
            try:
                found = extractor.extract(path=ex.path, query=query, status=ex.status, body=ex.response_body,
                                          content_encoding=ex.content_encoding)
            except Exception:  # noqa: BLE001 - a broken extractor must not lose the event
                log.exception("extractor %s failed on %s", type(extractor).__name__, ex.path)
                continue
            extras.update(found.pop("extras", None) or {})
            fields.update({k: cut(v, self.max_chars) if isinstance(v, str) else v
                           for k, v in found.items() if k in EXTRACTABLE and v is not None})
        referrer = headers.get("Referer")
        total = round(ex.total_ms, 3)
        upstream = round(ex.upstream_ms, 3) if ex.upstream_ms is not None else None
        return GatewayRequest(
            request_id=ex.request_id, started_at=ex.started_at, method=ex.method, path=ex.path,
            route=ex.route, query=self.event_query(ex.query, query), status=ex.status,
            request_bytes=ex.request_bytes,
            response_bytes=ex.response_bytes, total_ms=total,
            gateway_ms=round(max(0.0, total - (upstream or 0.0)), 3),
            visitor_id=self.visitors.visitor_id(client_ip, user_agent or "", ex.started_at),
            source=ex.source, upstream_ms=upstream,
            client_ip=client_ip if self.store_client_ip else None,
            user_id=ex.user_id or None, user_agent=cut(user_agent, self.max_chars) if user_agent else user_agent,
            referrer=cut(self.redacted_url(referrer), self.max_chars) if referrer else None,
            headers=self.redacted(headers), extras=extras or None, bot=is_bot(user_agent), **fields)

    def redacted(self, headers: Any) -> dict[str, str]:
        out: dict[str, list[str]] = {}
        for name, value in headers.get_all():
            lower = name.lower()
            if lower in self.redact:
                value = REDACTED
            elif lower == "referer":
                value = self.redacted_url(value)
            out.setdefault(name, []).append(value)
        return {name: REDACTED if values[0] == REDACTED else cut(", ".join(values), self.max_chars)
                for name, values in out.items()}

    def secret_param(self, name: str) -> bool:
        return name.lower() in self.redact_query or secret_query_name(name)

    def redacted_query(self, query: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """The parsed query with the values of secret parameters replaced (names and counts kept)."""
        return {name: [REDACTED] * len(values) if self.secret_param(name) else values
                for name, values in query.items()}

    def event_query(self, raw: str, parsed: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """The query as the event keeps it: redacted, and of a query string longer than max_chars only
        the parameters of its first max_chars characters, the last of them ending with TRUNCATED."""
        if len(raw) <= self.max_chars:
            return self.redacted_query(parsed)
        pairs = parse_qsl(raw[:self.max_chars], keep_blank_values=True)
        kept: dict[str, list[str]] = {}
        for name, value in pairs:
            kept.setdefault(name, []).append(value)
        query = self.redacted_query(kept)
        last = pairs[-1][0] if pairs else ""
        query.setdefault(last, [""])[-1] += TRUNCATED
        return query

    def redacted_url(self, url: str) -> str:
        """`url` with the values of its secret query parameters replaced, everything else as written."""
        base, mark, rest = url.partition("?")
        if not mark:
            return url
        query, hash_mark, fragment = rest.partition("#")
        pieces = []
        for piece in query.split("&"):
            name, equals, _value = piece.partition("=")
            pieces.append(f"{name}={REDACTED}" if equals and self.secret_param(unquote_plus(name)) else piece)
        return f"{base}?{'&'.join(pieces)}{hash_mark}{fragment}"


def _joined(headers: Any, name: str) -> str | None:
    values = headers.get_list(name) if hasattr(headers, "get_list") else [headers.get(name)]
    values = [v for v in values if v]
    return ", ".join(values) if values else None
