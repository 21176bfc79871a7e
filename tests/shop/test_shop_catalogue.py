"""The generated world: a deterministic catalogue of realistic products, demo users and their passwords."""
from __future__ import annotations

from producers.shop.catalogue import CATEGORIES, generate_catalogue, generate_users, password_for
from producers.shop.passwords import check_password, hash_password
from producers.shop.store import ShopStore
from rtdash.database import make_engine


def test_catalogue_is_deterministic_and_large():
    first, again = generate_catalogue(), generate_catalogue()
    assert len(first) >= 1000
    assert first == again
    assert generate_catalogue(seed=1) != first


def test_products_have_unique_ids_names_known_categories_and_cent_prices():
    products = generate_catalogue()
    assert len({p.id for p in products}) == len({p.name for p in products}) == len(products)
    assert products[0].id == "P00001" and products[-1].id == f"P{len(products):05d}"
    assert {p.category for p in products} == set(CATEGORIES)
    for p in products:
        assert isinstance(p.price_cents, int) and 100 <= p.price_cents <= 40_000_00
        assert p.price_cents % 100 in (99, 49)
        words = p.name.split()
        assert len(words) >= 3 and all(w[0].isupper() or w[0] in "'" for w in words)
        _, materials, nouns, _ = CATEGORIES[p.category]
        assert any(p.name.endswith(noun) for noun in nouns)
        assert any(f" {m} " in f" {p.name} " for m in materials)


def test_users_and_password_rule():
    users = generate_users(count=500)
    assert [u.id for u in users[:2]] == ["user0001", "user0002"] and users[-1].id == "user0500"
    assert generate_users(count=500) == users
    assert password_for("user0042") == "demo-user0042"


def test_password_hashes_are_salted_and_checked():
    stored = hash_password("demo-user0001")
    assert stored != hash_password("demo-user0001")
    assert stored.startswith("pbkdf2_sha256$20000$")
    assert check_password("demo-user0001", stored)
    assert not check_password("demo-user0002", stored)
    assert not check_password("demo-user0001", "garbage")


def test_seed_writes_once(tmp_path):
    store = ShopStore(make_engine(f"sqlite:///{tmp_path}/shop.db"))
    assert store.seed(product_count=1000, user_count=3, password_iterations=1000)
    assert not store.seed(product_count=1000, user_count=3, password_iterations=1000)
    assert store.product_count() == 1000
    assert store.authenticate("user0003", "demo-user0003") == "user0003"
    assert store.authenticate("user0003", "demo-user0002") is None
    assert store.authenticate("user0004", "demo-user0004") is None
    assert store.product("P00007")["name"] == generate_catalogue()[6].name
    store.engine.dispose()
