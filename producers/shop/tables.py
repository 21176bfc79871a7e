"""The shop database's tables: catalogue, users, carts and orders (SQLAlchemy Core).

A cart row belongs to a cart key: ``user:<user id>`` for a logged-in
session, ``anon:<token>`` for an anonymous cart cookie. An order keeps the
cart key it came from as its owner.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table

metadata = MetaData()

products = Table(
    "products", metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False, index=True),
    Column("category", String(32), nullable=False, index=True),
    Column("price_cents", BigInteger, nullable=False),
    Column("description", String(500), nullable=False),
)

users = Table(
    "users", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("password_hash", String(200), nullable=False),
)

cart_items = Table(
    "cart_items", metadata,
    Column("cart_key", String(80), primary_key=True),
    Column("product_id", String(16), primary_key=True),
    Column("qty", Integer, nullable=False),
)

orders = Table(
    "orders", metadata,
    Column("order_id", String(64), primary_key=True),
    Column("owner", String(80), nullable=False, index=True),
    Column("user_id", String(32), nullable=True),
    Column("total_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),      # pending | paid | failed
    Column("payment_id", String(64), nullable=True),   # the provider's trade_no
    Column("created_at", DateTime(timezone=True), nullable=False),
)

order_items = Table(
    "order_items", metadata,
    Column("order_id", String(64), primary_key=True),
    Column("product_id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("qty", Integer, nullable=False),
)
