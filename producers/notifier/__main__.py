"""Run the notifier: ``python -m producers.notifier [--group G] [--instance-id I] [--sms-gateway-url URL] [--to N]``.

Reads RTDASH_ORDERS_TOPIC (``orders``) from RTDASH_KAFKA_BOOTSTRAP in consumer
group --group (``rtdash-notifier``), from the earliest offset when the group is
new, as the group's static member --instance-id (``notifier-1``): a notifier
restarted after a crash takes its partitions back at once, instead of waiting
for the broker to give up on the dead one (the session timeout, 45 s); a second
notifier in the group needs an id of its own. It sends one
payment confirmation per order to the SMS gateway at --sms-gateway-url
(default http://127.0.0.1:RTDASH_SMS_GATEWAY_PORT), addressed to --to (the
events carry no customer number). Health at
http://RTDASH_BIND_HOST:RTDASH_NOTIFIER_HEALTH_PORT/healthz (8012). Stops
cleanly on SIGTERM/SIGINT, committing what the gateway acknowledged; exits 1
if the consumer thread fails.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import re

from kafka import KafkaConsumer

from rtdash.logs import setup_logging
from rtdash.service import listen, until_stopped
from rtdash.settings import Settings

from .app import make_app
from .consumer import ConfirmationSender
from .sms import DEMO_RECIPIENT, SmsClient

log = logging.getLogger("rtdash.notifier")

GROUP = "rtdash-notifier"


def phone_number(text: str) -> str:
    """An E.164 number, checked here: the gateway would refuse every message to a malformed one."""
    if not re.fullmatch(r"\+[1-9][0-9]{6,14}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an E.164 number (+ and 7-15 digits)")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m producers.notifier", description=__doc__.split("\n")[0])
    parser.add_argument("--group", default=GROUP, help="Kafka consumer group")
    parser.add_argument("--instance-id", default="notifier-1", help="static member id, one per notifier of the group")
    parser.add_argument("--sms-gateway-url", default=None, help="base URL of the SMS gateway")
    parser.add_argument("--to", type=phone_number, default=DEMO_RECIPIENT,
                        help="recipient of the confirmations (E.164, e.g. +8613800000000)")
    parser.add_argument("--max-records", type=int, default=100, help="records per poll (and per commit) at most")
    return parser.parse_args(argv)


def kafka_consumer(settings: Settings, args: argparse.Namespace) -> KafkaConsumer:
    # Reconnect pauses capped at 1 s, as the producers' (rtdash.kafka_producer): kafka-python's default cap,
    # 30 s, kept the notifier idle for up to half a minute after a restarted broker was back.
    return KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=args.group,
                         group_instance_id=args.instance_id, client_id="rtdash-notifier", enable_auto_commit=False,
                         auto_offset_reset="earliest", max_poll_records=args.max_records,
                         bootstrap_timeout_ms=5000, reconnect_backoff_max_ms=1000)


async def main(settings: Settings | None = None, args: argparse.Namespace | None = None) -> None:
    settings = settings or Settings()
    args = args or parse_args([])
    gateway_url = args.sms_gateway_url or f"http://127.0.0.1:{settings.sms_gateway_port}"
    loop, stop = asyncio.get_running_loop(), asyncio.Event()

    def consumer_ended() -> None:   # on the consumer thread: a failed consumer stops the service
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    sms = SmsClient(gateway_url)    # used by the consumer thread only
    sender = ConfirmationSender(lambda: kafka_consumer(settings, args), sms.send, topic=settings.orders_topic,
                                to=args.to, max_records=args.max_records, on_exit=consumer_ended)
    server = listen(make_app(settings, sender=sender, group=args.group), settings, settings.notifier_health_port)
    sender.start()
    log.info("notifier reading %s as group %s from %s, sending to %s (health http://%s:%d/healthz)",
             settings.orders_topic, args.group, settings.kafka_servers, gateway_url, settings.bind_host,
             settings.notifier_health_port)
    await until_stopped(stop)
    log.info("notifier stopping")
    server.stop()
    await loop.run_in_executor(None, sender.stop)
    sms.close()
    status = sender.status
    log.info("notifier stopped%s: %d sent, %d duplicates, %d rejected, %d bad records",
             " after its consumer failed" if status.state == "failed" else "", status.sent, status.duplicates,
             status.rejected, status.bad_records)
    if status.state == "failed":
        raise SystemExit(1)


if __name__ == "__main__":
    setup_logging()
    # kafka-python logs every failed reconnect at ERROR; the notifier logs each outage itself.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    asyncio.run(main(args=parse_args()))
