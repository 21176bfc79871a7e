"""Per-route extractors: the business fields of a GatewayRequest event.

An extractor looks at one finished exchange and returns some of the event's
extractable fields (``search_term``, ``result_product_ids``, ``product_id``,
``extras``). Which extractors run is decided per request by `applies(route,
path)`; only extractors with ``needs_body`` make the gateway keep a bounded
copy of the response body, so other routes cost nothing extra.

Extractors must be robust to whatever an upstream returns: a body that is not
JSON, is compressed, was truncated at the capture bound, or has another shape
gives ``None`` fields, never an error. Write your own by following the
`Extractor` protocol and pass them to `EventBuilder(extractors=...)`.
"""
from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

# Keys under which a JSON reply commonly lists its objects, in the order they are tried.
LIST_KEYS = ("products", "results", "items", "hits", "data", "docs")
MAX_DEPTH = 4
MAX_IDS = 100


class Extractor(Protocol):
    """What the event builder needs from an extractor."""

    needs_body: bool

    def applies(self, route: str, path: str) -> bool: ...

    def extract(self, *, path: str, query: Mapping[str, list[str]], status: int,
                body: bytes | None, content_encoding: str | None) -> dict[str, Any]: ...


class SearchExtractor:
    """``GET /search?q=``: the search term, and the product ids the reply listed (status 2xx only)."""

    needs_body = True

    def __init__(self, path: str = "/search", param: str = "q", routes: Iterable[str] | None = None):
        self.path = path.rstrip("/") or "/"
        self.param = param
        self.routes = frozenset(routes) if routes is not None else None

    def applies(self, route: str, path: str) -> bool:
        return (self.routes is None or route in self.routes) and (path.rstrip("/") or "/") == self.path

    def extract(self, *, path: str, query: Mapping[str, list[str]], status: int,
                body: bytes | None, content_encoding: str | None) -> dict[str, Any]:
        values = query.get(self.param) or []
        term = " ".join(values[0].split()) if values else None
        ids = None
        if 200 <= status < 300 and body:
            ids = product_ids_from_json(body, content_encoding)
        return {"search_term": term or None, "result_product_ids": ids}


class ProductPageExtractor:
    """``GET /products/<id>``: the product id from the path (whatever the status)."""

    needs_body = False

    def __init__(self, pattern: str = r"^/products/(?P<id>[^/]+)/?$", routes: Iterable[str] | None = None):
        self.pattern = re.compile(pattern)
        self.routes = frozenset(routes) if routes is not None else None

    def applies(self, route: str, path: str) -> bool:
        return (self.routes is None or route in self.routes) and self.pattern.match(path) is not None

    def extract(self, *, path: str, query: Mapping[str, list[str]], status: int,
                body: bytes | None, content_encoding: str | None) -> dict[str, Any]:
        match = self.pattern.match(path)
        return {"product_id": match.group("id") if match else None}


def default_extractors() -> list[Extractor]:
    """The demo shop's extractors, applied on every route (paths are passed through unchanged)."""
    return [SearchExtractor(), ProductPageExtractor()]


def product_ids_from_json(body: bytes, content_encoding: str | None = None) -> list[str] | None:
    """Product ids listed in a JSON reply, whatever its shape; None when there are none to find.

    Tried in order: a top-level ``product_ids`` list; a list of objects with
    ``id`` under one of `LIST_KEYS`; any such list elsewhere (depth-first, a
    few levels deep); a top-level list of such objects.
    """
    if content_encoding and content_encoding.strip().lower() in ("gzip", "x-gzip", "deflate"):
        try:
            wbits = 16 + zlib.MAX_WBITS if "gzip" in content_encoding.lower() else zlib.MAX_WBITS
            body = zlib.decompressobj(wbits).decompress(body, 4 * 1024 * 1024)
        except zlib.error:
            return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return _find_ids(doc, 0)


def _ids_of(items: Any) -> list[str] | None:
    if not isinstance(items, list):
        return None
    if items and all(isinstance(i, dict) and isinstance(i.get("id"), (str, int)) for i in items):
        return [str(i["id"]) for i in items[:MAX_IDS]]
    return None


def _find_ids(doc: Any, depth: int) -> list[str] | None:
    if depth > MAX_DEPTH:
        return None
    if isinstance(doc, list):
        return _ids_of(doc)
    if not isinstance(doc, dict):
        return None
    direct = doc.get("product_ids")
    if isinstance(direct, list) and all(isinstance(i, (str, int)) for i in direct):
        return [str(i) for i in direct[:MAX_IDS]]
    for key in LIST_KEYS:
        if key in doc:
            if doc[key] == []:
                return []
            found = _ids_of(doc[key])
            if found is None and isinstance(doc[key], (dict, list)):
                found = _find_ids(doc[key], depth + 1)
            if found is not None:
                return found
    for key, value in doc.items():
        if key not in LIST_KEYS and isinstance(value, (dict, list)):
            found = _find_ids(value, depth + 1)
            if found is not None:
                return found
    return None
