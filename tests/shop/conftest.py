"""Shop test fixtures: one seeded shop database per run, copied for each test; a cookie-keeping client."""
from __future__ import annotations

import json
import shutil
from http.cookies import SimpleCookie
from typing import Any, Callable

import pytest
from tornado.httpclient import HTTPResponse

from producers.shop.store import ShopStore
from rtdash.database import make_engine

# Cheap hashes for the test template (the real default is tested separately in the catalogue tests).
TEST_PASSWORD_ITERATIONS = 1000


@pytest.fixture(scope="session")
def shop_db_template(tmp_path_factory):
    """A shop database seeded once with the default catalogue and 500 demo users."""
    path = tmp_path_factory.mktemp("shop-template") / "shop.db"
    engine = make_engine(f"sqlite:///{path}")
    ShopStore(engine).seed(password_iterations=TEST_PASSWORD_ITERATIONS)
    engine.dispose()
    return path


@pytest.fixture
def shop_db_url(shop_db_template, tmp_path) -> str:
    path = tmp_path / "shop.db"
    shutil.copy(shop_db_template, path)
    return f"sqlite:///{path}"


class Browser:
    """Sends requests with the cookies the server set so far, as a browser would.

    `fetch(url, **kwargs)` is AsyncHTTPTestCase.fetch (use `call`) or an
    AsyncHTTPClient's fetch (use `acall`); `base` is prefixed to every path.
    """

    def __init__(self, fetch: Callable[..., Any], base: str = ""):
        self._fetch = fetch
        self.base = base
        self.cookies: dict[str, str] = {}

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
        return self._remember(self._fetch(self.base + path, **self._args(method, body, headers)))

    async def acall(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
        return self._remember(await self._fetch(self.base + path, **self._args(method, body, headers)))

    def _args(self, method: str, body: Any, headers: dict[str, str] | None) -> dict[str, Any]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT"):
            body = b""
        return {"method": method, "headers": headers, "body": body, "raise_error": False}

    def _remember(self, resp: HTTPResponse) -> HTTPResponse:
        for line in resp.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(line).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return resp


@pytest.fixture
def browser_cls():
    return Browser
