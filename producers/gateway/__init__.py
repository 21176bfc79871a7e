"""The API gateway: a reverse proxy that turns every request into a GatewayRequest event.

Modules: `proxy` (route table, pass-through handler, /_gateway/healthz, make_app),
`upstream` (keep-alive HTTP/1.1 client to the upstreams), `events` (the one
event builder: client IP, visitor id, redaction), `extractors` (per-route
business fields), `publisher` (bounded queue + Kafka producer thread), `mixin`
(the same event from inside any Tornado application). Run with
``python -m producers.gateway``.
"""
