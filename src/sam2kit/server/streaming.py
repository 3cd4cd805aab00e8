"""Streamed answers that a client cannot hold for ever: every send of a chunk must complete
within ``send_timeout`` seconds. uvicorn's flow control makes a send wait while the client does
not read (the socket's buffers are full), which pauses the producer, so memory stays bounded by
those buffers; the timeout then ends the stream, so that a client that stopped reading cannot
keep a video session in its tracking (and its prompts refused with 409) for ever."""

from __future__ import annotations

import asyncio
import logging

from fastapi.responses import StreamingResponse

log = logging.getLogger("sam2kit.serve")


class _TooSlow(Exception):
    pass


class TimedStreamingResponse(StreamingResponse):
    """A StreamingResponse whose sends each time out after ``send_timeout`` seconds; then the
    content's async generator is closed (its ``finally`` runs) and the connection dropped."""

    def __init__(self, content, *args, send_timeout: float, **kwargs):
        super().__init__(content, *args, **kwargs)
        self.send_timeout = send_timeout

    async def stream_response(self, send) -> None:
        async def timed(message) -> None:
            try:
                await asyncio.wait_for(send(message), self.send_timeout)
            except asyncio.TimeoutError:
                raise _TooSlow from None

        try:
            await super().stream_response(timed)
        except _TooSlow:
            log.warning("a client did not read a streamed answer for %g s (--stream-send-timeout): "
                        "stream ended", self.send_timeout)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
