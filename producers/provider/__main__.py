"""Run the payment provider simulator: ``python -m producers.provider [--notify-delay-ms 50]``.

Listens on RTDASH_BIND_HOST:RTDASH_PAYMENT_PROVIDER_PORT (8003). Signs notifies
with the demo provider key under <RTDASH_HOME>/keys/ (created on first start if
missing). Each payment's notify goes out after --notify-delay-ms and is re-sent
with exponential backoff (--backoff-s, doubling, at most --max-backoff-s) until
the receiver answers ``success``, at most --max-attempts times. Stops cleanly on
SIGTERM/SIGINT; notifies still pending then are dropped and logged.
"""
from __future__ import annotations

import argparse
import asyncio
import logging

from rtdash.logs import setup_logging
from rtdash.payments import ensure_provider_keys, load_private_key
from rtdash.service import until_stopped
from rtdash.settings import Settings

from .app import make_app
from .notify_sender import NotifySender

log = logging.getLogger("rtdash.provider")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m producers.provider", description=__doc__.split("\n")[0])
    parser.add_argument("--notify-delay-ms", type=float, default=50.0, help="pause before the first notify")
    parser.add_argument("--max-attempts", type=int, default=8, help="notify attempts per payment")
    parser.add_argument("--backoff-s", type=float, default=1.0, help="pause after the first failed attempt")
    parser.add_argument("--max-backoff-s", type=float, default=60.0, help="longest pause between attempts")
    return parser.parse_args(argv)


async def main(settings: Settings | None = None, args: argparse.Namespace | None = None) -> None:
    settings = settings or Settings()
    args = args or parse_args([])
    ensure_provider_keys(settings.keys_dir)
    sender = NotifySender(settings, load_private_key(settings.keys_dir), delay_s=args.notify_delay_ms / 1000,
                        max_attempts=args.max_attempts, backoff_s=args.backoff_s,
                        max_backoff_s=args.max_backoff_s)
    server = make_app(settings, sender=sender).listen(
        settings.payment_provider_port, address=settings.bind_host, max_body_size=64 * 1024)
    log.info("payment provider listening on http://%s:%d (notify delay %.0f ms, %d attempts)",
             settings.bind_host, settings.payment_provider_port, args.notify_delay_ms, args.max_attempts)
    await until_stopped()
    log.info("payment provider stopping")
    server.stop()
    await server.close_all_connections()
    await sender.close()
    log.info("payment provider stopped")


if __name__ == "__main__":
    setup_logging()
    asyncio.run(main(args=parse_args()))
