"""The jobs on a real Spark standalone cluster: a master and two workers, jobs submitted with spark-submit.

The cluster is `rtdash cluster up`'s (stack/cluster.py), on free ports, started once for the
module and stopped after it. Each job is submitted as on a cluster at work (client mode, the
project zipped for --py-files, the connector jars by --jars, settings in the driver's
environment) and takes a core on each worker, so its tasks run in two executors; its topics have
several partitions. Its events are produced first, with the ground truth known, and the
dashboard channels in Redis must show exactly that (unique counts within their error).
Every listening socket of the cluster and of the application is on the loopback.
"""
from __future__ import annotations

import json
import random
import urllib.request
from datetime import datetime, timedelta, timezone

import psutil
import pytest
import redis

from kafka_records import order
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, TRAFFIC_CHANNELS, snapshot_key
from rtdash.contracts import to_json
from rtdash.kafka_admin import ensure_topics
from rtdash.kafka_producer import make_producer
from stack.cli_cluster import status_lines
from stack.cluster import cluster_services, cluster_settings, master_json, package_zip, submit_service
from stack.processes import group_members
from stack.runner import Stack
from stack.testing import free_port
from test_traffic_query import assert_figures, event, visitor_key
from traffic_model import Expected
from waiting import eventually

pytestmark = pytest.mark.integration

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


@pytest.fixture(scope="module")
def cluster(stack_settings, kafka, redis_server, tmp_path_factory):
    """A master and two workers (1 core, 1g each) on free ports; stopped, with every executor, after the module."""
    home = tmp_path_factory.mktemp("cluster-home")
    settings = stack_settings.model_copy(update={
        "home": home, "spark_cluster_port": free_port(), "spark_cluster_ui_port": free_port(),
        "spark_worker_ui_port": 0, "spark_workers": 2, "spark_worker_cores": 1,
        "spark_worker_memory": "1g", "spark_executor_memory": "768m", "spark_driver_memory": "768m"})
    runner = Stack(cluster_settings(settings), cluster_services(settings))
    runner.start()
    try:
        yield settings, runner, package_zip(home / "rtdash-jobs.zip")
    finally:
        runner.stop()


def job_settings(cluster_settings_, name: str, **update):
    """The cluster's settings with topics, a Redis prefix, a health port and checkpoints of this job's own."""
    return cluster_settings_.model_copy(update={
        "redis_prefix": f"cluster{name}", "jobs_health_port": free_port(),
        "home": cluster_settings_.home / name, "spark_shuffle_partitions": 2, **update})


def snapshot(settings, channel: str) -> dict | None:
    client = redis.Redis.from_url(settings.redis)
    try:
        raw = client.get(snapshot_key(settings.redis_prefix, channel))
    finally:
        client.close()
    return json.loads(raw)["data"] if raw else None


def executors_per_worker(settings, app_name: str) -> list[int]:
    """How many executors of the running application `app_name` each worker runs."""
    state = master_json(settings)
    (app,) = [a for a in state["activeapps"] if a["name"] == app_name]
    counts = []
    for worker in state["workers"]:
        with urllib.request.urlopen(worker["webuiaddress"] + "/json/", timeout=5) as resp:
            executors = json.loads(resp.read())["executors"]
        counts.append(sum(1 for e in executors if e["appid"] == app["id"]))
    return counts


def listening_addresses(pgids: list[int]) -> set[str]:
    """The addresses the processes of these process groups listen on (TCP)."""
    found = set()
    for pgid in pgids:
        for proc in group_members(pgid):
            try:
                found |= {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
            except psutil.Error:
                continue
    return found


def check_on_the_cluster(settings, runner: Stack, job, app_name: str) -> None:
    """The application runs one executor on each worker (and `rtdash status` shows it), and nothing of the
    cluster or the job listens beyond the loopback; every worker advertises the loopback to the master."""
    assert executors_per_worker(settings, app_name) == [1, 1]
    assert any(line.startswith(f"  application {app_name} (app-") and ": RUNNING, 2 cores" in line
               for line in status_lines(settings)), status_lines(settings)
    assert {w["host"] for w in master_json(settings)["workers"]} == {"127.0.0.1"}
    addresses = listening_addresses([s.process.pid for s in runner.services] + [job.process.pid])
    assert addresses and addresses <= LOOPBACK, addresses


def test_traffic_job_submitted_to_the_cluster_shows_the_ground_truth(cluster):
    settings_, runner, package = cluster
    settings = job_settings(settings_, "traffic", gateway_topic="gateway.cluster",
                            gateway_dlq_topic="gateway.cluster.dlq", gateway_topic_partitions=3)
    ensure_topics(settings, [settings.gateway_topic, settings.gateway_dlq_topic])
    rng = random.Random(14)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    times = sorted(start + timedelta(seconds=rng.uniform(0, 3600)) for _ in range(1500))
    values = [to_json(event(rng, at, i)) for i, at in enumerate(times)] + [b"not json at all"]
    producer = make_producer(settings.kafka_servers, client_id="rtdash-test-cluster")
    for value in values:
        producer.produce(settings.gateway_topic, key=visitor_key(value), value=value)
    assert producer.flush(30) == 0, "Kafka did not acknowledge every event"
    expected = Expected(settings.tz, settings.traffic_lateness_seconds)
    expected.add_phase(values)

    with submit_service(settings, "traffic", package) as job:
        def shown() -> dict | bool:
            snapshots = {channel: snapshot(settings, channel) for channel in TRAFFIC_CHANNELS}
            if not all(snapshots.values()) or snapshots["traffic.today"].get("page_views") != \
                    expected.traffic_today()["page_views"]:
                return False
            return snapshots

        assert_figures(eventually(shown, timeout=180, interval=1, what="the traffic figures of every event"),
                       expected)
        check_on_the_cluster(settings, runner, job, "rtdash-traffic")


def test_orders_job_submitted_to_the_cluster_counts_each_order_once(cluster):
    settings_, runner, package = cluster
    settings = job_settings(settings_, "orders", orders_topic="orders.cluster", orders_dlq_topic="orders.cluster.dlq",
                            orders_topic_partitions=2)
    ensure_topics(settings, [settings.orders_topic, settings.orders_dlq_topic])
    now = datetime.now(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(2)
    orders = [(f"C{i:03d}", rng.randint(100, 50_000), max(midnight, now - timedelta(seconds=20 * i)))
              for i in range(60)]
    records = [(oid.encode(), order(oid, cents, at)) for oid, cents, at in orders]
    records += rng.sample(records, 15)                          # the relay publishes at least once
    records += [(b"bad", order("CBAD", -5, now))]               # a dead letter, not counted
    producer = make_producer(settings.kafka_servers, client_id="rtdash-test-cluster")
    for key, value in records:
        producer.produce(settings.orders_topic, key=key, value=value)
    assert producer.flush(30) == 0, "Kafka did not acknowledge every order"
    per_minute: dict[str, dict] = {}
    for _, cents, at in orders:
        minute = per_minute.setdefault(at.strftime("%H:%M"), {"count": 0, "amount_cents": 0})
        minute["count"] += 1
        minute["amount_cents"] += cents

    with submit_service(settings, "orders", package) as job:
        today = eventually(lambda: (data := snapshot(settings, ORDERS_TODAY)) and data["count"] >= len(orders) and data,
                           timeout=180, interval=1, what=f"orders.today with {len(orders)} orders")
        assert (today["date"], today["count"], today["amount_cents"]) == (
            now.date().isoformat(), len(orders), sum(cents for _, cents, _ in orders))
        assert snapshot(settings, ORDERS_PER_MINUTE)["minutes"] == per_minute
        check_on_the_cluster(settings, runner, job, "rtdash-orders")


def test_realtime_orders_query_on_the_cluster_with_the_applier_counts_each_order_once(cluster):
    """The default orders mode on the cluster: the real-time query takes one task slot per orders partition (two,
    one on each worker) for as long as it runs; the orders applier beside it puts each order in Redis once."""
    from stack.services import python_service

    settings_, runner, package = cluster
    settings = job_settings(settings_, "realtime", orders_mode="realtime", orders_topic="orders.clusterrt",
                            orders_dlq_topic="orders.clusterrt.dlq", orders_realtime_topic="orders.clusterrt.rows",
                            orders_topic_partitions=2, orders_realtime_health_port=free_port(),
                            orders_applier_port=free_port())
    ensure_topics(settings, [settings.orders_topic, settings.orders_dlq_topic, settings.orders_realtime_topic])
    now = datetime.now(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(3)
    orders = [(f"R{i:03d}", rng.randint(100, 50_000), max(midnight, now - timedelta(seconds=30 * i)))
              for i in range(40)]
    records = [(oid.encode(), order(oid, cents, at)) for oid, cents, at in orders]
    records += rng.sample(records, 10)
    producer = make_producer(settings.kafka_servers, client_id="rtdash-test-cluster")
    for key, value in records:
        producer.produce(settings.orders_topic, key=key, value=value)
    assert producer.flush(30) == 0, "Kafka did not acknowledge every order"

    with submit_service(settings, "orders_realtime", package) as job, \
            python_service(settings, "orders_applier", "jobs.orders_applier", settings.orders_applier_port):
        today = eventually(lambda: (data := snapshot(settings, ORDERS_TODAY)) and data["count"] >= len(orders) and data,
                           timeout=180, interval=1, what=f"orders.today with {len(orders)} orders")
        assert (today["date"], today["count"], today["amount_cents"]) == (
            now.date().isoformat(), len(orders), sum(cents for _, cents, _ in orders))
        check_on_the_cluster(settings, runner, job, "rtdash-orders-realtime")
