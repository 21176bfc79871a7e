"""rtdash push server: live dashboard figures from Redis to browsers over WebSocket.

Run it with ``python -m push_server`` (settings: RTDASH_BIND_HOST,
RTDASH_PUSH_PORT, RTDASH_REDIS_URL / RTDASH_REDIS_PORT, RTDASH_REDIS_PREFIX,
RTDASH_ALLOWED_ORIGINS, RTDASH_ALLOWED_HOSTS, RTDASH_PUSH_TOKEN_SECRET,
RTDASH_PUSH_MAX_CONNECTIONS, RTDASH_PUSH_MAX_CONNECTIONS_PER_ADDRESS,
RTDASH_PUSH_MAX_MESSAGES_PER_SECOND). Several processes may share one Redis (`rtdash up`
starts RTDASH_PUSH_SERVERS of them on RTDASH_PUSH_PORT, +1, ...): every
envelope, epoch and history comes from Redis, so any process serves any client.

Routes (``/``, ``/ws`` and ``/auth/check`` answer 403 to a Host header outside
RTDASH_ALLOWED_HOSTS, default ``127.0.0.1:<port>``, ``localhost:<port>``: no
DNS rebinding):

* ``/``            the dashboard page (assets under ``/static/``, nothing external);
* ``/ws?token=T``  WebSocket; needs a token (tokens.py, ``rtdash token``), and a
  browser's Origin must be in RTDASH_ALLOWED_ORIGINS (else 403; a client that
  sends no Origin is not a browser and is let in on its token alone);
* ``/auth/check``  ``Authorization: Bearer T``: 200 ``{"sub", "channels",
  "expires_at"}`` or 401 ``{"error", "detail"}``: how a page learns why its
  WebSocket did not open (a browser never sees the upgrade's HTTP status);
* ``/healthz`` ``{"status": "ok"|"degraded", "redis": "connected"|"disconnected",
  "redis_connected": bool, "clients": int, "channels": {channel: last seq}}``,
  always HTTP 200 while the process serves (degraded = Redis unreachable);
* ``/metrics`` Prometheus metrics (metrics.py): connections, envelopes sent and
  coalesced, closes by code, resumes served from the history or not.

Refused before the upgrade, with a JSON body ``{"error": reason, "detail": text}``:
401 token missing / token invalid (malformed, wrongly signed, another
algorithm, no channels) / token expired; 403 foreign Host or foreign Origin.

What the dashboard page does with tokens:

1. On load, if ``location.hash`` holds ``token=T`` (``rtdash demo`` and
   ``rtdash token`` print ``http://<host>:<port>/#token=T``; a fragment never
   reaches the server, its logs or a Referer), keep T in
   ``sessionStorage["rtdash.token"]`` and remove the fragment from the address
   bar (``history.replaceState``).
2. Without a token, do not connect: explain that access needs a link from
   ``rtdash token`` (or the one ``make demo`` prints).
3. Connect to ``/ws?token=<encodeURIComponent(T)>`` on the page's own host.
4. When the socket closes without having opened, ask ``/auth/check``: on 401
   forget T and show the reason (expired: get a new link) without reconnecting;
   on 403 say the page must be opened at the address the link names; otherwise
   reconnect with growing pauses.
5. Close codes on an open socket: 4001 token expired (forget T, explain, do not
   reconnect); 4008 too many messages from this client, 4029 too many
   connections from this address, 1013 server full or client too slow, 1012
   stream restarted, 1001 server stopping: reconnect with growing pauses.
6. A subscribe naming an unknown channel, or one outside the token's channels,
   is answered ``{"error": "unknown channel"|"channel not allowed", "channel":
   name}`` and changes nothing (the connection stays, subscriptions as they
   were); such a message has no ``seq``.

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
``{"subscribe": [channel, ...]}`` to narrow its channels (default: all its token allows); a
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
client too slow to keep up or server at RTDASH_PUSH_MAX_CONNECTIONS, 4001 token
expired, 4008 over RTDASH_PUSH_MAX_MESSAGES_PER_SECOND, 4029 over
RTDASH_PUSH_MAX_CONNECTIONS_PER_ADDRESS.

Modules: protocol (message shapes), hub (channels to sessions, history, no
I/O), session (per-connection queue + writer), tokens (access tokens), limits
(connections and message rate), broker / broker_redis (where
envelopes come from), handlers, app (make_app), __main__ (process lifecycle).
"""
