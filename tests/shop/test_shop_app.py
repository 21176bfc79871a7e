"""The shop's HTTP API: search, products, login with signed cookies, cart, checkout, and clear 4xx errors."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from tornado.testing import AsyncHTTPTestCase

from producers.shop.app import ensure_cookie_secret, make_app
from producers.shop.catalogue import generate_catalogue
from producers.shop.handlers import SESSION_COOKIE
from producers.shop.orders import OrderServiceError
from producers.shop.payment import PaymentError
from producers.shop.store import ShopStore
from rtdash.database import make_engine
from rtdash.settings import Settings


class FakePayments:
    """Stands in for the provider: records payments, or fails when told to."""

    def __init__(self):
        self.paid: list[tuple[str, int]] = []
        self.fail = False

    async def pay(self, order_id: str, amount_cents: int) -> str:
        if self.fail:
            raise PaymentError("provider unreachable")
        self.paid.append((order_id, amount_cents))
        return f"T{len(self.paid):04d}"


class FakeOrderService:
    """Stands in for the order service's internal API: records placed orders, says which are paid."""

    def __init__(self):
        self.placed: list[tuple[str, int]] = []
        self.paid: set[str] = set()
        self.fail = False

    async def place(self, order_id: str, amount_cents: int) -> None:
        if self.fail:
            raise OrderServiceError("order service unreachable")
        self.placed.append((order_id, amount_cents))

    async def status(self, order_id: str) -> str:
        if self.fail:
            raise OrderServiceError("order service unreachable")
        return "paid" if order_id in self.paid else "pending"


def body(resp):
    return json.loads(resp.body)


class ShopAppTest(AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _deps(self, tmp_path, shop_db_url, browser_cls):
        self.tmp, self.db_url, self.Browser = tmp_path, shop_db_url, browser_cls

    def get_app(self):
        self.engine = make_engine(self.db_url)
        self.store = ShopStore(self.engine)
        self.db = ThreadPoolExecutor(1)
        self.payments = FakePayments()
        self.orders = FakeOrderService()
        settings = Settings(home=self.tmp, _env_file=None)
        self.secret = ensure_cookie_secret(settings.keys_dir)
        return make_app(settings, store=self.store, db=self.db, payments=self.payments, orders=self.orders,
                        cookie_secret=self.secret)

    def tearDown(self):
        super().tearDown()
        self.db.shutdown()
        self.engine.dispose()

    def browser(self):
        return self.Browser(self.fetch)

    def login(self, browser, user="user0042", password="demo-user0042", as_json=True):
        if as_json:
            return browser.call("POST", "/login", {"user": user, "password": password})
        return browser.call("POST", "/login", f"user={user}&password={password}",
                            {"Content-Type": "application/x-www-form-urlencoded"})

    # --- catalogue ---------------------------------------------------------------------

    def test_search_returns_ids_of_matching_products(self):
        catalogue = {p.id: p for p in generate_catalogue()}
        resp = self.fetch("/search?q=cast+iron")
        assert resp.code == 200
        data = body(resp)
        expected = sorted(pid for pid, p in catalogue.items() if "cast iron" in p.name.lower())
        assert data["total"] == len(expected) > 0
        assert data["product_ids"] == expected[:20]
        assert [p["id"] for p in data["products"]] == data["product_ids"]
        assert all("cast iron" in p["name"].lower() for p in data["products"])
        assert "X-User-Id" not in resp.headers

    def test_search_words_all_match_and_limit_and_category_filter(self):
        data = body(self.fetch("/search?q=MUG%20copper&limit=100"))
        expected = [p.id for p in generate_catalogue() if {"mug", "copper"} <= set(p.name.lower().split())]
        assert data["product_ids"] == expected and len(expected) >= 1
        ceramic = [p.id for p in generate_catalogue() if p.category == "kitchen" and "ceramic" in p.name.lower()]
        kitchen = body(self.fetch("/search?q=ceramic&category=kitchen&limit=5"))
        assert kitchen["total"] == len(ceramic) > 5 and kitchen["product_ids"] == ceramic[:5]
        assert {p["category"] for p in kitchen["products"]} == {"kitchen"}
        assert body(self.fetch("/search?q=%25"))["total"] == 0  # LIKE wildcards are literal
        assert body(self.fetch("/search?q=zzzqqq")) == {"query": "zzzqqq", "total": 0, "product_ids": [],
                                                       "products": []}

    def test_bad_searches_are_400_with_a_reason(self):
        for query, reason in [("", "empty"), ("q=", "empty"), ("q=%20%20", "empty"),
                              ("q=" + "a" * 101, "longer than 100"), ("q=mug&limit=0", "limit"),
                              ("q=mug&limit=x", "limit"), ("q=mug&category=nope", "unknown category")]:
            resp = self.fetch(f"/search?{query}")
            assert resp.code == 400, query
            assert reason in body(resp)["error"]
        assert self.fetch("/search?q=" + "a" * 100).code == 200

    def test_product_page_and_404(self):
        first = generate_catalogue()[0]
        data = body(self.fetch(f"/products/{first.id}"))
        assert data == {"id": first.id, "name": first.name, "category": first.category,
                        "price_cents": first.price_cents, "description": first.description}
        for pid in ("P99999", "nope", "x" * 200):
            resp = self.fetch(f"/products/{pid}")
            assert resp.code == 404
            assert "unknown product" in body(resp)["error"]
        resp = self.fetch("/no/such/page")
        assert resp.code == 404 and "error" in body(resp)

    def test_categories(self):
        cats = body(self.fetch("/categories"))["categories"]
        assert len(cats) >= 10
        assert sum(c["products"] for c in cats) == len(generate_catalogue())
        assert {"slug": "kitchen", "name": "Kitchen"}.items() <= cats[[c["slug"] for c in cats].index("kitchen")].items()

    def test_health(self):
        data = body(self.fetch("/healthz"))
        assert data["status"] == "ok" and data["products"] >= 1000

    # --- login -------------------------------------------------------------------------

    def test_login_sets_signed_session_and_user_header(self):
        b = self.browser()
        resp = self.login(b)
        assert resp.code == 200 and body(resp) == {"user_id": "user0042"}
        assert resp.headers["X-User-Id"] == "user0042"
        assert SESSION_COOKIE in b.cookies and "user0042" not in b.cookies[SESSION_COOKIE].split("|")[-1]
        assert "httponly" in resp.headers["Set-Cookie"].lower()
        resp = b.call("GET", "/search?q=mug")
        assert resp.headers["X-User-Id"] == "user0042"
        resp = b.call("GET", "/products/nope")  # errors keep the user header too
        assert resp.code == 404 and resp.headers["X-User-Id"] == "user0042"
        assert body(b.call("GET", "/"))["user_id"] == "user0042"

    def test_login_with_a_form_works_too(self):
        resp = self.login(self.browser(), "user0007", "demo-user0007", as_json=False)
        assert resp.code == 200 and resp.headers["X-User-Id"] == "user0007"

    def test_bad_logins_are_refused(self):
        cases = [({"user": "user0042", "password": "demo-user0041"}, 401),
                 ({"user": "nobody", "password": "demo-nobody"}, 401),
                 ({"user": "user0042"}, 400), ({"password": "x"}, 400),
                 ({"user": ["user0042"], "password": "demo-user0042"}, 400),
                 ({"user": "u" * 65, "password": "x"}, 400)]
        for payload, code in cases:
            b = self.browser()
            resp = b.call("POST", "/login", payload)
            assert resp.code == code, payload
            assert "error" in body(resp) and "X-User-Id" not in resp.headers
            assert SESSION_COOKIE not in b.cookies
        resp = self.browser().call("POST", "/login", "{not json", {"Content-Type": "application/json"})
        assert resp.code == 400 and "JSON" in body(resp)["error"]

    def test_tampered_or_forged_cookie_is_not_logged_in(self):
        b = self.browser()
        self.login(b)
        good = b.cookies[SESSION_COOKIE]
        forged = good.replace("dXNlcjAwNDI=", "dXNlcjAwMDE=")  # base64 of user0042 -> user0001
        assert forged != good
        for value in (forged, good[:-1] + ("0" if good[-1] != "0" else "1"), "user0001"):
            resp = self.fetch("/", headers={"Cookie": f"{SESSION_COOKIE}={value}"})
            assert body(resp)["user_id"] is None and "X-User-Id" not in resp.headers
        assert self.fetch("/", headers={"Cookie": f"{SESSION_COOKIE}={good}"}).headers["X-User-Id"] == "user0042"

    def test_logout_clears_the_session(self):
        b = self.browser()
        self.login(b)
        resp = b.call("POST", "/logout")
        assert body(resp) == {"logged_out": True} and resp.headers["X-User-Id"] == "user0042"
        assert SESSION_COOKIE not in b.cookies
        resp = b.call("GET", "/")
        assert body(resp)["user_id"] is None and "X-User-Id" not in resp.headers

    # --- cart and checkout -------------------------------------------------------------

    def test_cart_and_checkout_as_a_logged_in_user(self):
        catalogue = generate_catalogue()
        a, c = catalogue[0], catalogue[2]
        b = self.browser()
        self.login(b)
        assert body(b.call("GET", "/cart")) == {"items": [], "count": 0, "total_cents": 0}
        b.call("POST", "/cart/items", {"product_id": a.id, "qty": 2})
        cart = body(b.call("POST", "/cart/items", {"product_id": c.id}))
        assert cart["count"] == 3 and cart["total_cents"] == 2 * a.price_cents + c.price_cents
        assert [(i["product_id"], i["qty"]) for i in cart["items"]] == [(a.id, 2), (c.id, 1)]
        resp = b.call("POST", "/checkout")
        assert resp.code == 201 and resp.headers["X-User-Id"] == "user0042"
        order = body(resp)
        assert order["status"] == "pending" and order["payment_id"] == "T0001"
        assert order["total_cents"] == 2 * a.price_cents + c.price_cents and order["user_id"] == "user0042"
        assert self.orders.placed == self.payments.paid == [(order["order_id"], order["total_cents"])]
        assert body(b.call("GET", "/cart"))["items"] == []
        seen = body(b.call("GET", f"/orders/{order['order_id']}"))
        assert {k: seen[k] for k in ("order_id", "status", "total_cents", "payment_id")} == \
            {k: order[k] for k in ("order_id", "status", "total_cents", "payment_id")}
        # another visitor cannot read it
        assert self.browser().call("GET", f"/orders/{order['order_id']}").code == 404
        assert b.call("GET", "/orders/S000").code == 404

    def test_anonymous_cart_checkout_and_merge_at_login(self):
        product = generate_catalogue()[5]
        b = self.browser()
        cart = body(b.call("POST", "/cart/items", {"product_id": product.id, "qty": "3"}))
        assert cart["count"] == 3 and "shop_cart" in b.cookies
        assert body(b.call("GET", "/cart"))["count"] == 3
        assert body(self.browser().call("GET", "/cart"))["count"] == 0  # another visitor: own cart
        self.login(b, "user0100", "demo-user0100")
        assert "shop_cart" not in b.cookies
        assert body(b.call("GET", "/cart"))["count"] == 3  # merged into the user's cart
        guest = self.browser()
        guest.call("POST", "/cart/items", {"product_id": product.id})
        resp = guest.call("POST", "/checkout")
        assert resp.code == 201 and body(resp)["user_id"] is None and "X-User-Id" not in resp.headers

    def test_remove_from_cart(self):
        b = self.browser()
        b.call("POST", "/cart/items", {"product_id": "P00001"})
        b.call("POST", "/cart/items", {"product_id": "P00002"})
        cart = body(b.call("DELETE", "/cart/items/P00001"))
        assert [i["product_id"] for i in cart["items"]] == ["P00002"]

    def test_bad_cart_and_checkout_requests(self):
        b = self.browser()
        cases = [({"product_id": "P99999"}, 404, "unknown product"), ({}, 400, "product_id"),
                 ({"product_id": 7}, 400, "product_id"), ({"product_id": "P00001", "qty": 0}, 400, "qty"),
                 ({"product_id": "P00001", "qty": 100}, 400, "qty"),
                 ({"product_id": "P00001", "qty": True}, 400, "qty"),
                 ({"product_id": "P00001", "qty": "two"}, 400, "qty")]
        for payload, code, reason in cases:
            resp = b.call("POST", "/cart/items", payload)
            assert resp.code == code, payload
            assert reason in body(resp)["error"]
        assert b.call("POST", "/cart/items", [1, 2]).code == 400
        b.call("POST", "/cart/items", {"product_id": "P00001", "qty": 99})
        resp = b.call("POST", "/cart/items", {"product_id": "P00001"})
        assert resp.code == 400 and "at most 99" in body(resp)["error"]
        for visitor in (self.browser(), b):
            if visitor is b:
                b.call("DELETE", "/cart/items/P00001")
            resp = visitor.call("POST", "/checkout")
            assert resp.code == 409 and body(resp) == {"error": "cart is empty"}
        assert self.payments.paid == [] and self.orders.placed == []
        resp = self.fetch("/checkout")  # wrong method
        assert resp.code == 405 and "error" in body(resp)

    def test_provider_down_keeps_the_cart_and_answers_502(self):
        b = self.browser()
        b.call("POST", "/cart/items", {"product_id": "P00003"})
        self.payments.fail = True
        resp = b.call("POST", "/checkout")
        assert resp.code == 502 and "payment provider" in body(resp)["error"]
        assert body(b.call("GET", f"/orders/{body(resp)['order_id']}"))["status"] == "failed"
        assert body(b.call("GET", "/cart"))["count"] == 1
        self.payments.fail = False
        assert b.call("POST", "/checkout").code == 201

    def test_order_service_down_at_checkout_pays_nothing_and_answers_502(self):
        b = self.browser()
        b.call("POST", "/cart/items", {"product_id": "P00003"})
        self.orders.fail = True
        resp = b.call("POST", "/checkout")
        assert resp.code == 502 and body(resp)["error"] == "payment unavailable, try again"
        assert self.payments.paid == []              # never paid at the provider: no order to pay
        assert body(b.call("GET", f"/orders/{body(resp)['order_id']}"))["status"] == "failed"
        assert body(b.call("GET", "/cart"))["count"] == 1

    def test_an_order_shows_paid_once_the_order_service_has_it_paid(self):
        b = self.browser()
        b.call("POST", "/cart/items", {"product_id": "P00004"})
        order_id = body(b.call("POST", "/checkout"))["order_id"]
        assert body(b.call("GET", f"/orders/{order_id}"))["status"] == "pending"
        self.orders.fail = True                      # not reachable: shown as the shop last knew it
        resp = b.call("GET", f"/orders/{order_id}")
        assert resp.code == 200 and body(resp)["status"] == "pending"
        self.orders.fail = False
        self.orders.paid.add(order_id)
        assert body(b.call("GET", f"/orders/{order_id}"))["status"] == "paid"
        self.orders.fail = True                      # remembered: no need to ask again
        assert body(b.call("GET", f"/orders/{order_id}"))["status"] == "paid"

    def test_a_checkout_whose_provider_call_failed_shows_paid_if_the_order_service_has_it_paid(self):
        b = self.browser()
        b.call("POST", "/cart/items", {"product_id": "P00005"})
        self.payments.fail = True                    # e.g. the provider took it but the answer timed out
        order_id = body(b.call("POST", "/checkout"))["order_id"]
        assert body(b.call("GET", f"/orders/{order_id}"))["status"] == "failed"
        self.orders.paid.add(order_id)
        assert body(b.call("GET", f"/orders/{order_id}"))["status"] == "paid"
