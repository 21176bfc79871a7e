"""`python -m jobs`: every rtdash streaming query in one Spark application.

The local stack runs this as its `spark_jobs` service: the orders, traffic and
alert queries share one driver (on a small machine a second JVM would take the
cores the orders path's latency needs), each with its own checkpoint, query
name and entry in the health endpoint (jobs/service.py). On a cluster each job
file also runs alone under spark-submit.
"""
from __future__ import annotations

from jobs import orders
from jobs.service import QuerySpec, run_job


def specs() -> list[QuerySpec]:
    from jobs import alerts, traffic

    return [QuerySpec("orders", orders.start), traffic.SPEC, QuerySpec("alerts", alerts.start)]


if __name__ == "__main__":
    run_job(specs(), app_name="rtdash-jobs", description=__doc__)
