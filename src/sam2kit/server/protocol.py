"""Slow clients at the HTTP layer: uvicorn's h11 protocol with a deadline for a request's
headers. uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no limit on
how long a client may take to send the headers of a request once it has begun (a "slowloris"
client sending one byte a second holds its connection, and a slot of ``--max-connections``,
for ever); here the connection is closed when the headers are not complete ``header_timeout``
seconds after the connection was made or the previous response ended. The headers' size is
bounded by h11 (``h11_max_incomplete_event_size``, 16 KB by default), so such a client costs
one socket and a few KB until then, and never a model worker (nothing reaches the app before
the headers are complete)."""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def with_header_timeout(seconds: float) -> type:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` closing connections whose
    request headers take longer than ``seconds``."""

    class HeaderDeadline(H11Protocol):
        header_timeout = seconds

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            timer, self._header_timer = getattr(self, "_header_timer", None), None
            if timer is not None:
                timer.cancel()

        def _too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # (no 408: a client this slow would not read it either)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection has the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline
