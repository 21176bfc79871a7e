"""Notifier: one SMS payment confirmation per paid order, straight from Kafka (``python -m producers.notifier``).

It reads topic `orders` in its own consumer group (``rtdash-notifier``), not
through Spark: a confirmation needs no aggregate, only the order. Modules:
`sms` (the SMS gateway client and the message text), `consumer` (the consumer
thread: read, send, commit), `app` (the health endpoint).

Exactly one message per order comes from two halves. The notifier delivers at
least once: it commits a record's offset only after the SMS gateway has
answered for it, so a notifier killed at any point reads again, after its
restart, every record whose message it may not have sent. The gateway makes
that at most once: each message carries the order id as its idempotency key,
and a key the gateway has seen records nothing new. The same two halves absorb
an order event that arrives twice (the order service's outbox relay publishes
at least once).
"""
