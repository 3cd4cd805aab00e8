"""What went wrong with a live source while it was read, in memory that does not grow with the
stream: damaged data, frames of another size, frames missing from the sender's timestamps, and
outages (the stream broke, stalled or ended and was reopened), each as counts plus capped lists."""

from __future__ import annotations

import threading

from sam2kit.video.sources.ranges import IndexRanges

MAX_OUTAGES_LISTED = 100  # outages listed one by one in results.json (all are counted)
MAX_SIZES_LISTED = 20  # distinct frame sizes listed


class SourceHealth:
    """Counts kept by a source as it reads (its reader thread writes, the consumer reads).

    * ``damaged_frames``: frame numbers (an :class:`IndexRanges`) of frames decoded from data
      the demuxer or decoder marked damaged (a broken MPEG-TS continuity, a corrupt flag):
      they are tracked as decoded, possibly with concealed blocks;
    * ``undecodable_packets``: packets the decoder refused (their frames never existed);
    * ``missing_frames``: frames absent from the sender's timestamps within one connection
      (a gap of k frame durations between two frames counts k - 1), e.g. UDP packets lost;
    * ``resized_frames`` and ``sizes``: frames whose size differed from the first frame's,
      scaled to it, and the sizes seen (WxH);
    * ``outages``: each time the stream broke, stalled or (with reconnecting) ended and was
      reopened: after which frame, why, how long until the next frame, how many frames the
      sender made meanwhile at its frame rate (``frames_lost``, an estimate: none is invented).
    """

    def __init__(self):
        self.damaged_frames = IndexRanges()
        self.undecodable_packets = 0
        self.missing_frames = 0
        self.resized_frames = 0
        self.sizes: list[str] = []
        self.outages: list[dict] = []
        self.outage_count = 0
        self.frames_lost = 0
        self._lock = threading.Lock()

    def resized(self, w: int, h: int) -> None:
        self.resized_frames += 1
        size = f"{w}x{h}"
        if size not in self.sizes and len(self.sizes) < MAX_SIZES_LISTED:
            self.sizes.append(size)

    def outage(self, after_frame: int, reason: str, seconds: float, fps: float | None) -> None:
        """An outage that ended with a frame ``seconds`` after the frame before it."""
        lost = max(0, round(seconds * fps) - 1) if fps else None
        with self._lock:
            self.outage_count += 1
            self.frames_lost += lost or 0
            if len(self.outages) < MAX_OUTAGES_LISTED:
                self.outages.append({"after_frame": after_frame, "reason": reason, "seconds": round(seconds, 3),
                                     "frames_lost": lost})

    def as_json(self) -> dict:
        with self._lock:
            return {
                "damaged_frames": len(self.damaged_frames), "damaged_frame_list": self.damaged_frames.ranges(),
                "damaged_frame_list_truncated": not self.damaged_frames.complete,
                "undecodable_packets": self.undecodable_packets, "missing_frames": self.missing_frames,
                "resized_frames": self.resized_frames, "resized_from": list(self.sizes),
                "outages": self.outage_count, "outage_list": [dict(o) for o in self.outages],
                "outage_list_truncated": self.outage_count > len(self.outages),
                "frames_lost_in_outages": self.frames_lost}
