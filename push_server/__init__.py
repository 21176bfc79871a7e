"""rtdash push server: live dashboard figures from Redis to browsers over WebSocket.

Run it with ``python -m push_server`` (settings: RTDASH_BIND_HOST,
RTDASH_PUSH_PORT, RTDASH_REDIS_URL / RTDASH_REDIS_PORT, RTDASH_REDIS_PREFIX,
RTDASH_ALLOWED_ORIGINS). Several processes may share one Redis (`rtdash up`
starts RTDASH_PUSH_SERVERS of them on RTDASH_PUSH_PORT, +1, ...): every
envelope, epoch and history comes from Redis, so any process serves any client.

Routes:

* ``/``        the dashboard page (assets under ``/static/``, nothing external);
* ``/ws``      WebSocket; browsers only from an allowed Origin (else 403);
* ``/healthz`` ``{"status": "ok"|"degraded", "redis": "connected"|"disconnected",
  "redis_connected": bool, "clients": int, "channels": {channel: last seq}}``,
  always HTTP 200 while the process serves (degraded = Redis unreachable).

WebSocket protocol (protocol.py). Every server message is an envelope
``{"channel": str, "epoch": str, "seq": int, "data": {...}}`` forwarded
verbatim from Redis, where the job wrote it:

* ``epoch`` names the channel's stream: a new one whenever its numbering
  starts again (Redis lost its data). Opaque to clients: compare for equality.
* ``seq`` grows by one per envelope within an epoch.
* An envelope with ``"snapshot": true`` holds the channel's whole state: the
  client replaces what it had of the channel. Without it (a live envelope),
  the per-minute channels (orders.per_minute, traffic.per_minute,
  routes.per_minute) carry only the minutes that changed, to merge into what
  the client has (a ``date`` other than the client's replaces); the other
  channels carry their whole state in every envelope anyway.

On a fresh connect the client gets, per channel, the latest snapshot, then the
live envelopes numbered after it. A client may send
``{"subscribe": [channel, ...]}`` to narrow its channels (default: all); a
newly subscribed channel's snapshot comes first.

Resume after a reconnect (to this or any other push server process): the
client remembers, per channel, the epoch and seq of the last envelope it
applied, and opens ``/ws?since=<URL-encoded JSON>`` with
``{"orders.today": {"epoch": "1764514800123456", "seq": 41}, ...}``. For each
channel in ``since`` whose epoch is still the current one and whose history
(kept in Redis: RTDASH_PUSH_HISTORY_SIZE envelopes, at most
RTDASH_PUSH_HISTORY_SECONDS old) still holds every envelope after that seq, it
gets exactly those envelopes, in order, unmarked: applied on top of what it
had they give the current state. Otherwise (epoch changed, history too short,
channel unknown to the client) it gets the fresh snapshot marked
``"snapshot": true``, as a new client does. A malformed ``since`` closes the
socket with 1003.

Close codes: 1001 server stopping, 1003 unintelligible client message, 1009
client message over the size limit, 1012 a channel's stream restarted (new
epoch: reconnect with ``since``, that channel comes back as a snapshot), 1013
client too slow to keep up.

Modules: protocol (message shapes), hub (channels to sessions, history, no
I/O), session (per-connection queue + writer), broker / broker_redis (where
envelopes come from), handlers, app (make_app), __main__ (process lifecycle).
"""
