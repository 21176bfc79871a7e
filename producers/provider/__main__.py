"""Run the payment provider simulator: ``python -m producers.provider [--notify-delay-ms 50]``.

Listens on RTDASH_BIND_HOST:RTDASH_PAYMENT_PROVIDER_PORT (8003). Signs notifies
with the private key at RTDASH_PROVIDER_PRIVATE_KEY (by default
<RTDASH_HOME>/keys/payment_provider_private.pem, the demo pair that
`rtdash keys demo` creates) and does not start without it; it never creates a
key. gmt_payment is written in RTDASH_PROVIDER_TIMEZONE. Each payment's notify
goes out after --notify-delay-ms and is re-sent with exponential backoff
(--backoff-s, doubling, at most --max-backoff-s) until the receiver answers
``success``, at most --max-attempts times. Stops cleanly on SIGTERM/SIGINT;
notifies still pending then are dropped and logged.
"""
from __future__ import annotations

import argparse
import asyncio
import logging

from rtdash.logs import setup_logging
from rtdash.keys import KeyFileError, load_private_key
from rtdash.service import listen, until_stopped
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
    try:
        private_key = load_private_key(settings.provider_private_key_path)
    except KeyFileError as exc:
        raise SystemExit(f"payment provider not started: {exc}") from None
    sender = NotifySender(settings, private_key, delay_s=args.notify_delay_ms / 1000,
                        max_attempts=args.max_attempts, backoff_s=args.backoff_s,
                        max_backoff_s=args.max_backoff_s)
    server = listen(make_app(settings, sender=sender), settings, settings.payment_provider_port,
                    max_body_size=64 * 1024)
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
