"""The order service's routes in one process, for tests: the intake on a thread, not in the store process.

tests/order_service/test_store_process.py covers the store process and its pipe; the tests
that only need the endpoint and the store use this instead.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa

from producers.order_service.app import NotifyEndpoint, make_app
from producers.order_service.handoff import RelayStatus
from producers.order_service.intake import NotifyIntake
from producers.order_service.internal import make_internal_app
from producers.order_service.store import OrderStore
from producers.order_service.writer import GroupWriter
from rtdash.settings import Settings


def in_thread_writer(settings: Settings, store: OrderStore, db: Executor,
                     public_key: rsa.RSAPublicKey) -> GroupWriter:
    """A group writer whose groups are taken in by the intake on `db` (a thread)."""
    intake = NotifyIntake(store, public_key=public_key, app_id=settings.payment_app_id,
                          seller_id=settings.payment_seller_id, tz=settings.provider_tz)
    return GroupWriter(lambda group: asyncio.get_running_loop().run_in_executor(db, intake.accept, group))


def in_thread_app(settings: Settings, store: OrderStore, db: Executor, public_key: rsa.RSAPublicKey, *,
                  writer: GroupWriter | None = None) -> NotifyEndpoint:
    """`make_app` with groups taken in by the intake on `db` (a thread); the relay's status stays at zero.

    Give `writer` to share one with the internal API (`in_internal_app`)."""
    writer = writer or in_thread_writer(settings, store, db, public_key)
    return make_app(settings, writer=writer, store=store, db=db, relay_status=RelayStatus())


def in_internal_app(writer: GroupWriter, store: OrderStore, db: Executor) -> tornado.web.Application:
    """The internal API (the shop places its orders there) on the same writer and store."""
    return make_internal_app(writer=writer, store=store, db=db)
