"""`python -m jobs`: every rtdash streaming query in one Spark application.

The local stack runs this as its `spark_jobs` service: the orders, traffic and
alert queries share one driver (on a small machine a second JVM would take the
cores the orders path's latency needs), each with its own checkpoint, query
name and entry in the health endpoint (jobs/service.py). On a cluster each job
file also runs alone under spark-submit.

The `orders` entry follows RTDASH_ORDERS_MODE, so one writer owns
orders.today and orders.per_minute: in `realtime` (the default) it is the
real-time-mode query (jobs/orders_realtime.py), whose rows the orders applier
(jobs/orders_applier.py, a service of its own) puts in Redis, and the
application refuses to start when its task slots cannot hold the query's
partitions beside the micro-batch queries; in `microbatch` it is the
micro-batch orders job (jobs/orders.py), which writes Redis itself.
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
        from jobs import orders_realtime

        return [orders_realtime.spec(len(microbatch)), *microbatch]
    return [QuerySpec("orders", orders.start), *microbatch]


def preflight(settings: Settings):
    """The slot check of the real-time mode (nothing to check in the micro-batch mode)."""
    if settings.orders_mode != "realtime":
        return None
    from jobs import orders_realtime

    return orders_realtime.preflight(len(specs(settings)) - 1)


if __name__ == "__main__":
    settings = Settings()
    run_job(specs(settings), app_name="rtdash-jobs", description=__doc__, preflight=preflight(settings))
