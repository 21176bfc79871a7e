"""rtdash push server: live dashboard figures from Redis to browsers over WebSocket.

Run it with ``python -m push_server`` (settings: RTDASH_BIND_HOST,
RTDASH_PUSH_PORT, RTDASH_REDIS_URL / RTDASH_REDIS_PORT, RTDASH_REDIS_PREFIX,
RTDASH_ALLOWED_ORIGINS).

Routes:

* ``/``        the dashboard page (assets under ``/static/``, nothing external);
* ``/ws``      WebSocket; browsers only from an allowed Origin (else 403);
* ``/healthz`` ``{"status": "ok"|"degraded", "redis": "connected"|"disconnected",
  "redis_connected": bool, "clients": int, "channels": {channel: last seq}}``,
  always HTTP 200 while the process serves (degraded = Redis unreachable).

WebSocket protocol (protocol.py): every server message is an envelope
``{"channel": str, "seq": int, "data": {...}}`` forwarded verbatim from Redis.
On connect the client gets, per channel, the latest snapshot, then the live
envelopes numbered after it; ``seq`` grows strictly per channel on one
connection. A client may send ``{"subscribe": [channel, ...]}`` to narrow its
channels (default: all); a newly subscribed channel's snapshot comes first.
Close codes: 1001 server stopping, 1003 unintelligible client message, 1009
client message over the size limit, 1012 Redis lost its data (reconnect and
start over from the snapshots), 1013 client too slow to keep up.

Modules: protocol (message shapes), hub (channels to sessions, no I/O),
session (bounded queue + writer per connection), broker / broker_redis (where
envelopes come from), handlers, app (make_app), __main__ (process lifecycle).
"""
