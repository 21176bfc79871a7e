"""The shop's /metrics: requests by route pattern and status, unknown paths under "other"."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from tornado.testing import AsyncHTTPTestCase

from producers.shop.app import ensure_cookie_secret, make_app
from producers.shop.catalogue import generate_catalogue
from producers.shop.store import ShopStore
from rtdash.database import make_engine
from rtdash.settings import Settings

from scraping import samples, value


class ShopMetricsTest(AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _deps(self, tmp_path, shop_db_url):
        self.tmp, self.db_url = tmp_path, shop_db_url

    def get_app(self):
        self.engine = make_engine(self.db_url)
        self.db = ThreadPoolExecutor(1)
        settings = Settings(home=self.tmp, _env_file=None)
        return make_app(settings, store=ShopStore(self.engine), db=self.db, payments=None, orders=None,
                        cookie_secret=ensure_cookie_secret(settings.keys_dir))

    def tearDown(self):
        super().tearDown()
        self.db.shutdown()
        self.engine.dispose()

    def test_requests_are_counted_by_route_and_status(self):
        product = generate_catalogue()[0].id
        for path in (f"/products/{product}", f"/products/{product}", "/products/P99999", "/categories", "/nowhere"):
            self.fetch(path)
        found = samples(self.fetch("/metrics").body)
        assert value(found, "rtdash_http_requests_total", route="/products/([^/]+)", status="200") == 2
        assert value(found, "rtdash_http_requests_total", route="/products/([^/]+)", status="404") == 1
        assert value(found, "rtdash_http_requests_total", route="/categories", status="200") == 1
        assert value(found, "rtdash_http_requests_total", route="other", status="404") == 1
        assert value(found, "rtdash_http_request_duration_seconds_count", route="/products/([^/]+)") == 3
