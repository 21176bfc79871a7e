"""Fixtures of the push server tests: a private redis-server the test may stop and start again."""
from __future__ import annotations

import pytest

from rtdash.settings import Settings
from stack.runner import Service
from stack.services import redis_service
from stack.testing import free_port


class RestartableRedis:
    """The stack's redis-server (no persistence) on a port of its own; `stop` and `start` keep the port,
    and `start` returns once it answers."""

    def __init__(self, service: Service, url: str):
        self.service = service
        self.url = url

    def stop(self) -> None:
        self.service.stop()

    def start(self) -> None:
        self.service.start()
        self.service.wait_ready()


@pytest.fixture
def push_redis(tmp_path):
    """A redis-server of this test alone, stopped at the end whatever happened."""
    settings = Settings(_env_file=None, home=tmp_path, redis_port=free_port())
    with redis_service(settings, persist=False) as service:
        yield RestartableRedis(service, settings.redis)
