"""Settings shared by every rtdash process.

All values come from environment variables with the prefix ``RTDASH_`` (for
example ``RTDASH_KAFKA_PORT=19092``) or from a ``.env`` file in the working
directory; the defaults are the local ports of ``shared/DESIGN.md``. One
`Settings` object is built at the edge of each process (CLI, service main, job
main) and passed down: nothing reads the environment deep inside the code, so
tests can run several stacks side by side with different settings.

One module of more than 300 lines on purpose: it is the catalogue of every
setting, each with its default and why, read as one list (the README's table
follows it).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rtdash.channels import HISTORY_SECONDS, HISTORY_SIZE
from rtdash.traffic_rules import ORDER_CENTER_PREFIX

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The provider's key files in <home>/keys unless settings name others (rtdash/keys.py reads and makes them).
PUBLIC_KEY_FILE = "payment_provider_public.pem"
PRIVATE_KEY_FILE = "payment_provider_private.pem"


class Settings(BaseSettings):
    """Every knob of the local stack, with the defaults of DESIGN.md."""

    model_config = SettingsConfigDict(env_prefix="RTDASH_", env_file=".env", extra="ignore")

    # Where state lives: Kafka data, Redis data, SQLite, keys, checkpoints, logs.
    home: Path = Path(".rtdash")
    # "Today" and every window are computed in this zone.
    timezone: str = "UTC"
    bind_host: str = "127.0.0.1"

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    # Empty means "the local broker": 127.0.0.1:<kafka_port>.
    kafka_bootstrap: str = ""
    kafka_heap: str = "512m"

    redis_port: int = 6379
    # Empty means "the local redis-server": redis://127.0.0.1:<redis_port>/0.
    redis_url: str = ""
    # Every Redis client of the jobs (rtdash/redis_client.py) gives up connecting after the first, and
    # waiting for a command's answer after the second: a stalled Redis fails a micro-batch, never hangs it.
    redis_connect_timeout_seconds: float = Field(default=5, gt=0)
    redis_socket_timeout_seconds: float = Field(default=15, gt=0)

    gateway_port: int = 8000
    order_service_port: int = 8001
    shop_port: int = 8002
    payment_provider_port: int = 8003
    push_port: int = 8888
    # Push server processes `rtdash up` starts on one Redis, at push_port, push_port + 1, ...
    push_servers: int = Field(default=1, ge=1, le=32)
    # Each dashboard channel's history in Redis, from which a reconnecting client gets what it missed:
    # at most this many envelopes, none older than this (0 keeps none: every resume gets a snapshot).
    push_history_size: int = Field(default=HISTORY_SIZE, ge=0, le=100_000)
    push_history_seconds: float = Field(default=HISTORY_SECONDS, ge=0)
    # Health endpoint of the Spark application (every query: orders, traffic, alerts).
    jobs_health_port: int = 8011
    sms_gateway_port: int = 8004
    notifier_health_port: int = 8012
    # The order service's internal API, where the shop places each order before it is paid: a
    # listener of its own, which no gateway route reaches. Loopback unless the shop runs on another
    # host (docker-compose: 0.0.0.0 inside the compose network, no port published).
    order_service_internal_host: str = "127.0.0.1"
    order_service_internal_port: int = 8005
    # Where the shop and the payment simulator reach it; empty means http://127.0.0.1:<internal port>.
    order_service_internal_url: str = ""

    # Any SQLAlchemy URL; empty means SQLite at <home>/orders.db.
    database_url: str = ""

    orders_topic: str = "orders"
    orders_dlq_topic: str = "orders.dlq"
    orders_topic_partitions: int = 1

    # The payment provider this shop is registered with (Alipay-style ids).
    payment_app_id: str = "2021000000000001"
    payment_seller_id: str = "2088000000000001"
    notify_max_body_bytes: int = 8192
    # The provider's public key (PEM), all the order service needs to verify notifies; a real
    # deployment installs it. Empty means <home>/keys/payment_provider_public.pem.
    provider_public_key: str = ""
    # The provider's private key (PEM): only the demo provider simulator and the payment load
    # generator sign. Empty means <home>/keys/payment_provider_private.pem (`rtdash keys demo`).
    provider_private_key: str = ""
    # The zone of the provider's clock: gmt_payment carries no zone, and Alipay writes Beijing time.
    provider_timezone: str = "Asia/Shanghai"

    spark_master: str = "local[2]"
    # One partition suits local mode on a small machine: each extra one adds a state-store task
    # to every micro-batch (bench/e2e_latency). Raise it on a cluster.
    spark_shuffle_partitions: int = 1
    # Micro-batch trigger interval; 0 starts the next batch as soon as the last one is done and
    # data is there, which gives the lowest latency (a fixed interval adds half of itself on average).
    spark_trigger_seconds: float = 0.0
    spark_driver_memory: str = "1g"
    # Kafka records per micro-batch at most (Spark's maxOffsetsPerTrigger): the job sums a batch's
    # orders on the driver, and a backlog (after an outage) is caught up in batches of this size.
    spark_max_orders_per_batch: int = Field(default=50_000, gt=0)
    # Duplicate order events closer than this (by Kafka timestamp) are dropped.
    dedupe_watermark: str = "1 hour"
    # The Spark application's /healthz answers 503 (stalled) when a query has input waiting and has not
    # completed a micro-batch for this long; keep it above the longest trigger interval (alerts_eval_seconds).
    jobs_stall_seconds: float = Field(default=120, gt=0)

    # --- the paid-order path's mode (jobs/orders_realtime.py, jobs/orders_applier.py) ---
    # Who writes orders.today and orders.per_minute, one writer per mode: "realtime", a Spark
    # real-time-mode query (parse, validate, dead letters, day and minute) writing rows to
    # orders_realtime_topic and the orders applier applying each to Redis once per order id; or
    # "microbatch", the micro-batch orders job (jobs/orders.py), the fallback.
    orders_mode: Literal["realtime", "microbatch"] = "microbatch"
    # The real-time query's output: one compact row per valid paid order, key = order id.
    orders_realtime_topic: str = "orders.rows"
    # Length of one real-time-mode batch (Spark's trigger(realTime=...), at least 5 s): at each
    # batch's end the query commits its offsets, and the records around that moment wait for the
    # next batch to start (BENCHMARKS.md: the longer the batch, the rarer these stalls).
    orders_realtime_batch_seconds: float = Field(default=60, ge=5)
    # The real-time query runs in a Spark application of its own (python -m jobs.orders_realtime): in the
    # application of the micro-batch queries, each end of a real-time batch frees its slot and a traffic
    # task may take it, and the next batch's records wait for that task (BENCHMARKS.md). Its /healthz.
    orders_realtime_health_port: int = 8014
    # Its master; empty means local[N], N the orders topic's partitions (one task slot each, held all
    # batch long). On a cluster: as many executor cores as the topic has partitions.
    orders_realtime_spark_master: str = ""
    # The orders applier's /healthz and /metrics.
    orders_applier_port: int = 8013
    # How long the applier keeps a day's set of applied order ids after its last order: a repeated
    # order id is a no-op while the set lives; a row of a day whose set is gone but whose totals
    # remain is refused (counted, logged), never counted twice. Keep it above any replay's age.
    orders_applied_ids_seconds: int = Field(default=2 * 24 * 3600, ge=3600)

    # --- traffic job (jobs/traffic.py) ---
    # How far before the minute of the traffic job's clock (the newest started_at counted) an event's
    # minute may start and the event still count; later ones are counted as late, not in the figures.
    traffic_lateness_seconds: int = Field(default=300, ge=0)
    # An event starting more than this after its Kafka record was written is out of range (dead letter).
    traffic_max_future_seconds: int = Field(default=300, ge=0)
    # Kafka records one traffic micro-batch takes at most (a backlog is caught up in batches of this size).
    spark_max_gateway_events_per_batch: int = Field(default=500_000, gt=0)
    # Days (of event time) the per-day traffic figures are kept in Redis; minute detail goes once its
    # day, the recent-terms window and the lateness are over.
    traffic_keep_days: int = Field(default=8, gt=0)
    # Batches of made-up events the traffic query runs through its Spark job before it starts (and
    # reports healthy), so its first real batches are as fast as later ones; 0 starts it cold.
    traffic_warm_up_batches: int = Field(default=30, ge=0)

    # --- alerts (jobs/alerts.py): Grafana-style rules over the per-minute series in Redis ---
    alerts_topic: str = "alerts"
    # Rules evaluated (comma list of orders_drop, gateway_5xx_share); empty evaluates none.
    alert_rules: str = "orders_drop,gateway_5xx_share"
    # How often the rules are evaluated (the alerts query's processing-time trigger).
    alerts_eval_seconds: float = Field(default=60, gt=0)
    # orders_drop: paid orders in the trailing window against the window before it; fires when the
    # drop share is at least the threshold while the earlier window had at least min_volume orders.
    alert_orders_window_minutes: int = Field(default=60, gt=0)
    alert_orders_drop_threshold: float = Field(default=0.5, gt=0, le=1)
    alert_orders_min_volume: int = Field(default=20, gt=0)
    alert_orders_pending_seconds: float = Field(default=300, ge=0)
    # gateway_5xx_share: share of non-bot gateway requests answered 5xx in the trailing window; fires
    # above the threshold when the window had at least min_requests requests.
    alert_5xx_window_minutes: int = Field(default=5, gt=0)
    alert_5xx_threshold: float = Field(default=0.05, ge=0, lt=1)
    alert_5xx_min_requests: int = Field(default=20, gt=0)
    alert_5xx_pending_seconds: float = Field(default=60, ge=0)

    # --- gateway (producers/gateway) ---
    gateway_topic: str = "gateway"
    gateway_dlq_topic: str = "gateway.dlq"
    # Route table: "name=/prefix=http://host:port" entries separated by commas; empty means
    # the local order service and demo shop (see `routes`).
    gateway_routes: str = ""
    gateway_upstream_timeout_seconds: float = 10.0
    # Events waiting to be published, in count and in bytes (the producer's queue: librdkafka's
    # queue.buffering.max.messages and .max.kbytes); an event beyond either is dropped and counted.
    gateway_queue_size: int = Field(default=10_000, gt=0)
    gateway_queue_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Longest value an event keeps of each request header (User-Agent and Referer included), of the
    # whole query string and of the search term; a longer one is cut and ends with "…[truncated]".
    gateway_event_max_chars: int = Field(default=1024, ge=16)
    # Proxies whose X-Forwarded-For is trusted (comma list of IPs or CIDRs).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Secret mixed into the daily visitor-id salt; empty means one generated under <home>/keys.
    visitor_secret: str = ""
    # Put the raw client IP in gateway events (off: only the salted visitor id).
    gateway_store_client_ip: bool = False
    # Extra request headers redacted in events (Authorization and Cookie always are).
    gateway_redact_headers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Extra query parameter names (comma list, case-insensitive) whose values are redacted in events,
    # beyond the secret-looking names the gateway always redacts (token, password, key, ...).
    gateway_redact_query: str = ""

    # --- the edge of every HTTP service (rtdash.service.listen) ---
    # Open client connections one service process holds; one more is answered 503 and closed at once.
    max_connections: int = Field(default=512, gt=0)
    # A connection that sends no request (or no complete request head) for this long is closed.
    idle_timeout_seconds: float = Field(default=60.0, gt=0)
    # A request body must have arrived this long after its head, else the connection is closed.
    body_timeout_seconds: float = Field(default=60.0, gt=0)

    # --- logs of `rtdash up`: <home>/logs/<service>.log, rotated when full (stack/logfiles.py) ---
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Rotated files kept (<service>.log.1 ... .N); 0 keeps only the current file, started over when full.
    log_backups: int = Field(default=3, ge=0)

    # --- who may read the dashboard (push_server/tokens.py, push_server/limits.py) ---
    # HS256 secret of the dashboard tokens (at least 32 bytes); empty means one generated under <home>/keys.
    push_token_secret: str = ""
    # Clock difference allowed when checking a token's times.
    push_token_leeway_seconds: float = Field(default=5.0, ge=0, le=300)
    # Host headers the push server answers (host:port, or a host alone for any port); empty means
    # 127.0.0.1, localhost and [::1] at push_port, and bind_host at push_port unless it is a wildcard.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Open dashboard WebSockets one push server process holds; one more is closed at once with 1013.
    push_max_connections: int = Field(default=10_000, gt=0)
    # ... and from one client address; one more is closed at once with 4029.
    push_max_connections_per_address: int = Field(default=64, gt=0)
    # Messages one WebSocket client may send per second (that many at once); one more closes it with 4008.
    push_max_messages_per_second: float = Field(default=10.0, gt=0)

    # --- Kafka partitions: rtdash/kafka_admin.py creates each topic with its count, and adds partitions to a
    # topic that has fewer (never removes any). Keys as DESIGN.md: gateway by visitor id, orders by order id.
    # The traffic job reads the gateway topic's partitions in parallel (one task each, at least); every
    # figure stays exact with any count, since a batch's figures are summed whatever partition they came from.
    gateway_topic_partitions: int = Field(default=3, ge=1, le=1024)
    # Dead-letter and alert topics: a trickle; one partition keeps them in the order they were written.
    side_topic_partitions: int = Field(default=1, ge=1, le=1024)

    # --- the Spark standalone cluster of `rtdash cluster up` (stack/cluster.py): a master and workers from
    # the pyspark installation, every process on bind_host; jobs go to it with `rtdash cluster submit` ---
    spark_cluster_port: int = 7077
    spark_cluster_ui_port: int = 8080
    # Worker web UIs at this port, the next one, ...; 0: each worker takes a free port.
    spark_worker_ui_port: int = 8081
    spark_workers: int = Field(default=2, ge=1, le=16)
    # What each worker offers the applications: modest, on a machine that also runs Kafka and Redis.
    spark_worker_cores: int = Field(default=1, ge=1)
    spark_worker_memory: str = "1g"
    # Heap of each executor an application submitted to the cluster gets (at most spark_worker_memory).
    spark_executor_memory: str = "1g"

    # Where `make jars` put the JVM dependencies (kafka/ and spark/); empty means <project>/.jars.
    jars_dir: str = ""

    # Origins whose pages may open the dashboard WebSocket.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A dashboard client with one write unfinished this long (it stopped reading) is closed with 1013.
    push_stall_seconds: float = Field(default=30.0, gt=0)
    # Redis key prefix for snapshots, pub/sub channels and job bookkeeping.
    redis_prefix: str = "rtdash"

    @field_validator("allowed_origins", "allowed_hosts", "trusted_proxies", "gateway_redact_headers", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("timezone", "provider_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)") from exc
        return value

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def provider_tz(self) -> ZoneInfo:
        return ZoneInfo(self.provider_timezone)

    @property
    def kafka_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def order_service_internal(self) -> str:
        """The base URL of the order service's internal API."""
        return (self.order_service_internal_url or f"http://127.0.0.1:{self.order_service_internal_port}").rstrip("/")

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'orders.db').resolve()}"

    @property
    def origins(self) -> list[str]:
        """Allowed WebSocket origins; by default the dashboard's own address."""
        if self.allowed_origins:
            return self.allowed_origins
        return [f"http://127.0.0.1:{self.push_port}", f"http://localhost:{self.push_port}"]

    @property
    def hosts(self) -> list[str]:
        """Host headers the push server answers; by default its own address at push_port."""
        if self.allowed_hosts:
            return self.allowed_hosts
        hosts = [f"127.0.0.1:{self.push_port}", f"localhost:{self.push_port}", f"[::1]:{self.push_port}"]
        if self.bind_host not in ("0.0.0.0", "::", "", "127.0.0.1", "localhost", "::1"):
            hosts.append(f"[{self.bind_host}]:{self.push_port}" if ":" in self.bind_host
                         else f"{self.bind_host}:{self.push_port}")
        return hosts

    @property
    def routes(self) -> list[tuple[str, str, str]]:
        """The gateway's route table as (name, path prefix, upstream base URL), longest prefix first."""
        if self.gateway_routes:
            table = []
            for entry in self.gateway_routes.split(","):
                parts = entry.strip().split("=", 2)
                if len(parts) != 3 or not parts[1].startswith("/") or "://" not in parts[2]:
                    raise ValueError(f"bad gateway route {entry!r}: use name=/prefix=http://host:port")
                table.append((parts[0], parts[1], parts[2].rstrip("/")))
        else:
            table = [("order_center", ORDER_CENTER_PREFIX, f"http://127.0.0.1:{self.order_service_port}"),
                     ("shop", "/", f"http://127.0.0.1:{self.shop_port}")]
        return sorted(table, key=lambda route: len(route[1]), reverse=True)

    @property
    def jars(self) -> Path:
        return Path(self.jars_dir) if self.jars_dir else PROJECT_ROOT / ".jars"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def provider_public_key_path(self) -> Path:
        return Path(self.provider_public_key) if self.provider_public_key else self.keys_dir / PUBLIC_KEY_FILE

    @property
    def provider_private_key_path(self) -> Path:
        return Path(self.provider_private_key) if self.provider_private_key else self.keys_dir / PRIVATE_KEY_FILE

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def orders_realtime_master(self) -> str:
        """The real-time orders application's master: the setting, else one local slot per orders partition."""
        return self.orders_realtime_spark_master or f"local[{self.orders_topic_partitions}]"

    def child_env(self) -> dict[str, str]:
        """These settings as RTDASH_* variables, for the processes a runner starts."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, list):
                value = ",".join(value)
            elif name == "home":
                value = str(Path(value).resolve())
            env[f"RTDASH_{name.upper()}"] = str(value)
        return env
