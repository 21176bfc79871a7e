"""The shop's store: catalogue, users, carts and orders (SQLAlchemy, synchronous).

Every method is blocking and is called from the shop's database executor,
never on the event loop. The catalogue and the demo users are generated from
a seed (catalogue.py) and written once, on the first start of an empty
database. Passwords are stored as salted hashes (passwords.py); the tables
are in tables.py.

A cart belongs to a cart key: ``user:<user id>`` for a logged-in session,
``anon:<token>`` for an anonymous cart cookie. An order keeps the cart key it
came from as its owner; only that owner can read it.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from .catalogue import (CATEGORIES, DEFAULT_PRODUCTS, DEFAULT_SEED, DEFAULT_USERS, generate_catalogue,
                        generate_users, password_for)
from .passwords import check_password, hash_password
from .tables import cart_items, metadata, order_items, orders, products, users

log = logging.getLogger("rtdash.shop.store")

MAX_QTY = 99


class ShopError(ValueError):
    """Bad input the client can fix; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CartLine:
    product_id: str
    name: str
    price_cents: int
    qty: int

    @property
    def subtotal_cents(self) -> int:
        return self.price_cents * self.qty


@dataclass(frozen=True)
class Order:
    order_id: str
    owner: str
    user_id: str | None
    total_cents: int
    status: str
    payment_id: str | None
    created_at: datetime
    lines: list[CartLine] = field(default_factory=list)


def new_order_id() -> str:
    """Sortable and unique: S + UTC time to the second + 10 random hex digits (fits the notify's 64)."""
    return "S" + datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + secrets.token_hex(5)


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class ShopStore:
    """Catalogue, users, carts and orders on one SQLAlchemy engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        metadata.create_all(engine)

    # --- first start ---------------------------------------------------------------

    def seed(self, *, seed: int = DEFAULT_SEED, product_count: int = DEFAULT_PRODUCTS,
             user_count: int = DEFAULT_USERS, password_iterations: int = 20_000) -> bool:
        """Write the generated catalogue and users into an empty database; False if already seeded."""
        with self.engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(products)).scalar_one():
                return False
            conn.execute(insert(products), [
                dict(id=p.id, name=p.name, category=p.category, price_cents=p.price_cents,
                     description=p.description) for p in generate_catalogue(seed, product_count)])
            conn.execute(insert(users), [
                dict(id=u.id, name=u.name,
                     password_hash=hash_password(password_for(u.id), iterations=password_iterations))
                for u in generate_users(seed, user_count)])
        log.info("catalogue seeded: %d products, %d demo users (seed %d)", product_count, user_count, seed)
        return True

    def product_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(products)).scalar_one()

    # --- catalogue -----------------------------------------------------------------

    def search(self, query: str, *, limit: int = 20, category: str | None = None) -> tuple[int, list[dict]]:
        """(total matches, first `limit` products) whose name or category contains every word of `query`."""
        words = query.split()
        conditions = [or_(products.c.name.ilike(_like(w), escape="\\"),
                          products.c.category.ilike(_like(w), escape="\\")) for w in words]
        if category:
            conditions.append(products.c.category == category)
        where = and_(*conditions)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(products).where(where)).scalar_one()
            rows = conn.execute(select(products.c.id, products.c.name, products.c.category,
                                       products.c.price_cents)
                                .where(where).order_by(products.c.id).limit(limit)).mappings().all()
        return total, [dict(r) for r in rows]

    def product(self, pid: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(products).where(products.c.id == pid)).mappings().first()
        return dict(row) if row else None

    def categories(self) -> list[dict]:
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(products.c.category, func.count())
                                       .group_by(products.c.category)).all())
        return [{"slug": slug, "name": CATEGORIES[slug][0], "products": counts.get(slug, 0)}
                for slug in sorted(CATEGORIES) if counts.get(slug)]

    # --- users ---------------------------------------------------------------------

    def authenticate(self, user: str, password: str) -> str | None:
        """The user id when the password is right, else None."""
        with self.engine.connect() as conn:
            stored = conn.execute(select(users.c.password_hash).where(users.c.id == user)).scalar_one_or_none()
        if stored is None:
            check_password(password, hash_password("x", iterations=1000))  # similar work for unknown users
            return None
        return user if check_password(password, stored) else None

    # --- carts ---------------------------------------------------------------------

    def add_to_cart(self, cart_key: str, pid: str, qty: int) -> list[CartLine]:
        with self.engine.begin() as conn:
            if conn.execute(select(products.c.id).where(products.c.id == pid)).first() is None:
                raise ShopError(f"unknown product {pid}", status=404)
            current = conn.execute(select(cart_items.c.qty).where(
                cart_items.c.cart_key == cart_key, cart_items.c.product_id == pid)).scalar_one_or_none()
            if (current or 0) + qty > MAX_QTY:
                raise ShopError(f"at most {MAX_QTY} of one product per cart")
            if current is None:
                conn.execute(insert(cart_items).values(cart_key=cart_key, product_id=pid, qty=qty))
            else:
                conn.execute(update(cart_items).where(cart_items.c.cart_key == cart_key,
                                                      cart_items.c.product_id == pid)
                             .values(qty=current + qty))
            return self._cart(conn, cart_key)

    def remove_from_cart(self, cart_key: str, pid: str) -> list[CartLine]:
        with self.engine.begin() as conn:
            conn.execute(delete(cart_items).where(cart_items.c.cart_key == cart_key,
                                                  cart_items.c.product_id == pid))
            return self._cart(conn, cart_key)

    def cart(self, cart_key: str) -> list[CartLine]:
        with self.engine.connect() as conn:
            return self._cart(conn, cart_key)

    def merge_carts(self, source: str, target: str) -> None:
        """Move an anonymous cart into the user's cart at login (quantities add up, capped)."""
        with self.engine.begin() as conn:
            moving = conn.execute(select(cart_items.c.product_id, cart_items.c.qty)
                                  .where(cart_items.c.cart_key == source)).all()
            for pid, qty in moving:
                current = conn.execute(select(cart_items.c.qty).where(
                    cart_items.c.cart_key == target, cart_items.c.product_id == pid)).scalar_one_or_none()
                if current is None:
                    conn.execute(insert(cart_items).values(cart_key=target, product_id=pid, qty=qty))
                else:
                    conn.execute(update(cart_items).where(cart_items.c.cart_key == target,
                                                          cart_items.c.product_id == pid)
                                 .values(qty=min(MAX_QTY, current + qty)))
            conn.execute(delete(cart_items).where(cart_items.c.cart_key == source))

    @staticmethod
    def _cart(conn, cart_key: str) -> list[CartLine]:
        rows = conn.execute(
            select(products.c.id, products.c.name, products.c.price_cents, cart_items.c.qty)
            .join(products, products.c.id == cart_items.c.product_id)
            .where(cart_items.c.cart_key == cart_key).order_by(products.c.id)).all()
        return [CartLine(*row) for row in rows]

    # --- orders --------------------------------------------------------------------

    def create_order(self, cart_key: str, user_id: str | None) -> Order:
        """A pending order for the whole cart, at current prices; the cart stays until payment starts."""
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            lines = self._cart(conn, cart_key)
            if not lines:
                raise ShopError("cart is empty", status=409)
            order = Order(order_id=new_order_id(), owner=cart_key, user_id=user_id,
                          total_cents=sum(line.subtotal_cents for line in lines), status="pending",
                          payment_id=None, created_at=now, lines=lines)
            conn.execute(insert(orders).values(
                order_id=order.order_id, owner=cart_key, user_id=user_id, total_cents=order.total_cents,
                status="pending", payment_id=None, created_at=now))
            conn.execute(insert(order_items), [
                dict(order_id=order.order_id, product_id=line.product_id, name=line.name,
                     unit_price_cents=line.price_cents, qty=line.qty) for line in lines])
        return order

    def payment_started(self, order: Order, payment_id: str) -> None:
        """The provider took the payment: remember its id and take the ordered items out of the cart."""
        with self.engine.begin() as conn:
            conn.execute(update(orders).where(orders.c.order_id == order.order_id)
                         .values(payment_id=payment_id))
            conn.execute(delete(cart_items).where(
                cart_items.c.cart_key == order.owner,
                cart_items.c.product_id.in_([line.product_id for line in order.lines])))

    def payment_failed(self, order_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(orders).where(orders.c.order_id == order_id).values(status="failed"))

    def payment_done(self, order: Order) -> Order:
        """The order service says the order is paid: so it shows from now on."""
        with self.engine.begin() as conn:
            conn.execute(update(orders).where(orders.c.order_id == order.order_id, orders.c.status != "paid")
                         .values(status="paid"))
        return replace(order, status="paid")

    def order(self, order_id: str, owner: str) -> Order | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.order_id == order_id,
                                                    orders.c.owner == owner)).mappings().first()
            if row is None:
                return None
            lines = conn.execute(select(order_items.c.product_id, order_items.c.name,
                                        order_items.c.unit_price_cents, order_items.c.qty)
                                 .where(order_items.c.order_id == order_id)
                                 .order_by(order_items.c.product_id)).all()
        return Order(order_id=row["order_id"], owner=row["owner"], user_id=row["user_id"],
                     total_cents=row["total_cents"], status=row["status"], payment_id=row["payment_id"],
                     created_at=row["created_at"], lines=[CartLine(*line) for line in lines])
