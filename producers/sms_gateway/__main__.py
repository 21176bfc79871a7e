"""Run the SMS gateway simulator: ``python -m producers.sms_gateway [--journal PATH]``.

Listens on RTDASH_BIND_HOST:RTDASH_SMS_GATEWAY_PORT (8004). Records each
message of ``POST /messages`` once per idempotency key, lists them at
``GET /messages``, and appends each to --journal (default
<RTDASH_HOME>/sms_gateway/messages.jsonl; ``--journal ''`` keeps them in memory
only), which it reads back at start. Stops cleanly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from rtdash.logs import setup_logging
from rtdash.service import listen, until_stopped
from rtdash.settings import Settings

from .app import MAX_MESSAGES, MessageLog, make_app

log = logging.getLogger("rtdash.sms_gateway")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m producers.sms_gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--journal", default=None,
                        help="JSON-lines file of the recorded messages ('' for none); "
                             "default <RTDASH_HOME>/sms_gateway/messages.jsonl")
    parser.add_argument("--max-messages", type=int, default=MAX_MESSAGES, help="messages kept in memory")
    return parser.parse_args(argv)


async def main(settings: Settings | None = None, args: argparse.Namespace | None = None) -> None:
    settings = settings or Settings()
    args = args or parse_args([])
    journal = settings.home / "sms_gateway" / "messages.jsonl" if args.journal is None else args.journal
    messages = MessageLog(Path(journal) if journal else None, max_messages=args.max_messages)
    server = listen(make_app(settings, messages=messages), settings, settings.sms_gateway_port,
                    max_body_size=64 * 1024)
    log.info("sms gateway listening on http://%s:%d (journal %s)", settings.bind_host, settings.sms_gateway_port,
             journal or "off")
    await until_stopped()
    log.info("sms gateway stopping")
    server.stop()
    await server.close_all_connections()
    messages.close()
    log.info("sms gateway stopped (%d messages, %d duplicates refused)", len(messages.messages),
             messages.duplicates)


if __name__ == "__main__":
    setup_logging()
    asyncio.run(main(args=parse_args()))
