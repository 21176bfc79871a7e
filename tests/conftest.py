"""Session fixtures: the real services, started once per test run on free ports.

Kafka (KRaft), Redis and the SparkSession are expensive on two cores, so each
starts at most once per run, only when a test asks for it, under a temporary
RTDASH_HOME, and is stopped at the end: nothing is left running or listening.
The services are the same `Service` definitions `rtdash up` uses.
"""
from __future__ import annotations

import pytest

from rtdash.settings import Settings
from rtdash.stack import Service, ensure_topics, free_port, kafka_service, redis_service


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory) -> Settings:
    """Settings of the test stack: a temporary home and free ports for everything."""
    home = tmp_path_factory.mktemp("rtdash-home")
    return Settings(
        _env_file=None, home=home, kafka_port=free_port(), kafka_controller_port=free_port(),
        redis_port=free_port(), order_service_port=free_port(), push_port=free_port(),
        orders_job_health_port=free_port(), spark_trigger_seconds=0, kafka_heap="384m",
        spark_shuffle_partitions=2, timezone="UTC")


@pytest.fixture(scope="session")
def kafka(stack_settings) -> Service:
    service = kafka_service(stack_settings)
    service.start()
    try:
        service.wait_healthy()
        ensure_topics(stack_settings)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_server(stack_settings) -> Service:
    service = redis_service(stack_settings, persist=False)
    service.start()
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def spark(stack_settings):
    """One SparkSession for the whole run, with the Kafka connector on its classpath."""
    from jobs.spark import build_session

    session = build_session(stack_settings, "rtdash-tests")
    try:
        yield session
    finally:
        session.stop()
