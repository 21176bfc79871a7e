"""`python -m jobs`: every rtdash streaming query in one Spark application.

The local stack runs this as its `spark_jobs` service: the orders, traffic and
alert queries share one driver (on a small machine a second JVM would take the
cores the orders path's latency needs), each with its own checkpoint, query
name and entry in the health endpoint (jobs/service.py). On a cluster each job
file also runs alone under spark-submit.

The orders query follows RTDASH_ORDERS_MODE, so one writer owns
orders.today and orders.per_minute: in `microbatch` it is the micro-batch
orders job (jobs/orders.py) in this application, writing Redis itself; in
`realtime` this application runs no orders query: the real-time-mode query
(jobs/orders_realtime.py) runs in an application of its own (`rtdash up`'s
`orders_realtime` service) and the orders applier (jobs/orders_applier.py)
puts its rows in Redis.
"""
from __future__ import annotations

from jobs import orders
from jobs.service import QuerySpec, run_job
from rtdash.settings import Settings


def specs(settings: Settings) -> list[QuerySpec]:
    """The application's queries in `settings`' orders mode."""
    from jobs import alerts, traffic

    microbatch = [traffic.SPEC, QuerySpec("alerts", alerts.start)]
    if settings.orders_mode == "realtime":
        return microbatch
    return [QuerySpec("orders", orders.start), *microbatch]


if __name__ == "__main__":
    run_job(specs(Settings()), app_name="rtdash-jobs", description=__doc__)
