"""The in-process variant: a base handler that publishes the gateway's event for its own requests.

For services that cannot sit behind the proxy. Derive the handlers from
`GatewayEventMixin` (a RequestHandler) and put the recorder in the
application settings under ``gateway_events``::

    publisher = KafkaPublisher(bootstrap_servers=..., topic=settings.gateway_topic,
                               queue_size=settings.gateway_queue_size, queue_bytes=settings.gateway_queue_bytes)
    publisher.start()
    app = tornado.web.Application(handlers, **gateway_events(settings, publisher, route="billing"))

    class InvoiceHandler(GatewayEventMixin):
        ...

After each response (`on_finish`) the handler describes its exchange and the
same `EventBuilder` as the proxy turns it into a GatewayRequest with
``source="in_process"`` and ``upstream_ms=None`` (the handler is the whole
service time). The user id comes from the handler's ``X-User-Id`` response
header, or from `gateway_user_id()` when overridden. An application without a
recorder in its settings publishes nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import tornado.web

from rtdash.settings import Settings

from .events import EventBuilder, Exchange, request_id_from
from .proxy import BODY_CAPTURE_BYTES
from .publisher import Publisher

log = logging.getLogger("rtdash.gateway.mixin")

SETTINGS_KEY = "gateway_events"


@dataclass
class InProcessEvents:
    """What the mixin needs: the shared builder, a publisher, and the route name of this service."""

    builder: EventBuilder
    publisher: Publisher
    route: str
    capture_bytes: int = BODY_CAPTURE_BYTES


def gateway_events(settings: Settings, publisher: Publisher, *, route: str,
                   builder: EventBuilder | None = None) -> dict[str, Any]:
    """Application settings entry that switches the mixin on."""
    return {SETTINGS_KEY: InProcessEvents(builder or EventBuilder.from_settings(settings), publisher, route)}


class GatewayEventMixin(tornado.web.RequestHandler):
    """Publishes one GatewayRequest per request after the response has gone out."""

    _gw_bytes = 0
    _gw_capture: bytearray | None = None
    _gw_overflow = False

    def gateway_user_id(self) -> str | None:
        """The authenticated user of this request; by default the X-User-Id response header."""
        return self._headers.get("X-User-Id")

    def flush(self, include_footers: bool = False):
        events = self.application.settings.get(SETTINGS_KEY)
        if events is not None and self.request.method != "HEAD":
            size = sum(len(part) for part in self._write_buffer)
            self._gw_bytes += size
            if self._gw_capture is None and not self._gw_overflow \
                    and events.builder.needs_body(events.route, self.request.path):
                self._gw_capture = bytearray()
            if self._gw_capture is not None and not self._gw_overflow:
                if len(self._gw_capture) + size <= events.capture_bytes:
                    self._gw_capture += b"".join(self._write_buffer)
                else:
                    self._gw_overflow, self._gw_capture = True, None
        return super().flush(include_footers)

    def on_finish(self) -> None:
        events = self.application.settings.get(SETTINGS_KEY)
        if events is not None:
            try:
                self._gw_publish(events)
            except Exception:  # noqa: BLE001 - analytics never breaks the service
                log.exception("could not publish the event of %s %s", self.request.method, self.request.path)
        super().on_finish()

    def _gw_publish(self, events: InProcessEvents) -> None:
        req = self.request
        elapsed = req.request_time()
        context = req.connection.context if req.connection is not None else None
        # With xheaders=True tornado replaces remote_ip by X-Forwarded-For; the builder decides trust itself.
        peer = getattr(context, "_orig_remote_ip", None) or req.remote_ip or ""
        events.publisher.publish(events.builder.build(Exchange(
            request_id=request_id_from(req.headers),
            started_at=datetime.now(timezone.utc) - timedelta(seconds=elapsed),
            method=req.method, path=req.path, query=req.query, route=events.route,
            status=self.get_status(), request_bytes=len(req.body or b""), response_bytes=self._gw_bytes,
            total_ms=elapsed * 1000, upstream_ms=None, peer_ip=peer, request_headers=req.headers,
            source="in_process", user_id=self.gateway_user_id(),
            response_body=bytes(self._gw_capture) if self._gw_capture is not None else None,
            content_encoding=self._headers.get("Content-Encoding"))))
