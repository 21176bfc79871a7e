"""Session fixtures: the real services, started once per test run on free ports.

Kafka (KRaft), Redis and the SparkSession are expensive on two cores, so each
starts at most once per run, only when a test asks for it, under a temporary
RTDASH_HOME, and is stopped at the end: nothing is left running or listening.
The services are the same `Service` definitions `rtdash up` uses.
"""
from __future__ import annotations

import os

import pytest

from rtdash.settings import Settings
from producers.order_service.store import OrderStore
from rtdash.database import make_engine
from rtdash.keys import demo_keys
from stack.kafka import kafka_service
from stack.runner import Service
from stack.services import python_service, redis_service
from stack.testing import free_ports

# Every Spark application a test starts warms its traffic query up (jobs/traffic.py) with two batches,
# not thirty: the path is run, and a suite that starts a dozen applications stays within its time.
os.environ.setdefault("RTDASH_TRAFFIC_WARM_UP_BATCHES", "2")


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory) -> Settings:
    """Settings of the test stack: a temporary home, free ports for everything, the demo provider's keys."""
    home = tmp_path_factory.mktemp("rtdash-home")
    ports = ("kafka_port", "kafka_controller_port", "redis_port", "order_service_port", "order_service_internal_port",
             "push_port", "gateway_port", "shop_port", "payment_provider_port", "jobs_health_port")
    settings = Settings(
        _env_file=None, home=home, **dict(zip(ports, free_ports(len(ports)))), spark_trigger_seconds=0,
        kafka_heap="384m", spark_shuffle_partitions=2, timezone="UTC")
    demo_keys(settings)   # as `rtdash up` does: no service creates a key by starting
    return settings


@pytest.fixture(scope="session")
def kafka(stack_settings) -> Service:
    """The broker, with the pipeline's topics created (its on_ready hook)."""
    with kafka_service(stack_settings) as service:
        yield service


@pytest.fixture(scope="session")
def redis_server(stack_settings) -> Service:
    with redis_service(stack_settings, persist=False) as service:
        yield service


@pytest.fixture(scope="session")
def spark(stack_settings):
    """One SparkSession for the whole run, with the Kafka connector on its classpath."""
    from jobs.spark import build_session

    session = build_session(stack_settings, "rtdash-tests")
    try:
        yield session
    finally:
        session.stop()
        stop_spark_jvm()


def stop_spark_jvm() -> None:
    """End the JVM pyspark launched, now: left alone it outlives the test run by seconds."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.terminate()
        proc.wait(30)
    SparkContext._gateway = None
    SparkContext._jvm = None


# --- the pipeline: rtdash's own processes on top of Kafka, Redis and Spark ----------

@pytest.fixture(scope="session")
def order_service(stack_settings, kafka):
    with python_service(stack_settings, "order_service", "producers.order_service",
                        stack_settings.order_service_port) as service:
        yield service


@pytest.fixture(scope="session")
def push_server(stack_settings, redis_server):
    with python_service(stack_settings, "push_server", "push_server", stack_settings.push_port) as service:
        yield service


def running_query(start, spark, settings):
    """A job's streaming query, started in the run's session and stopped at the end of the run."""
    query = start(spark, settings)
    try:
        yield query
    finally:
        query.stop()


@pytest.fixture(scope="session")
def orders_query(spark, stack_settings, kafka, redis_server):
    """The orders query on the session's `orders` topic, publishing under the session's prefix."""
    from jobs import orders

    yield from running_query(orders.start, spark, stack_settings)


@pytest.fixture(scope="session")
def traffic_query(spark, stack_settings, kafka, redis_server):
    """The traffic query on the session's `gateway` topic, publishing under the session's prefix."""
    from jobs import traffic

    yield from running_query(traffic.start, spark, stack_settings)


@pytest.fixture(scope="session")
def pipeline(order_service, push_server, orders_query):
    return order_service, push_server, orders_query


@pytest.fixture(scope="session")
def shop_behind_gateway(stack_settings, order_service):
    """Payment provider, demo shop and gateway in front of the session's order service."""
    with python_service(stack_settings, "payment_provider", "producers.provider",
                        stack_settings.payment_provider_port) as provider, \
            python_service(stack_settings, "shop", "producers.shop", stack_settings.shop_port, ready_timeout=90,
                           args=["--users", "50"]) as shop, \
            python_service(stack_settings, "gateway", "producers.gateway", stack_settings.gateway_port,
                           health_path="/_gateway/healthz") as gateway:
        yield provider, shop, gateway


@pytest.fixture(scope="session")
def ground_truth(stack_settings, order_service):
    engine = make_engine(stack_settings.database)
    store = OrderStore(engine, topic=stack_settings.orders_topic)
    yield store
    engine.dispose()
