"""Every limit, timeout and size of ``sam2kit serve`` in one place, with its default and its
meaning: the command line's options and ``--help`` are made from this table, and the OpenAPI
schema (``/docs``) and ``GET /api/health`` show the values in force."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path


def _setting(default, help: str, flag: str | None = None, **kw):
    return field(default=default, metadata={"help": help, "flag": flag, **kw})


@dataclass(frozen=True)
class ServeSettings:
    """What the server is allowed to do; defaults suit one machine with a few users."""

    host: str = _setting("127.0.0.1", "address to bind; anything but loopback needs --token (or --insecure)")
    port: int = _setting(8000, "port to listen on (0: a free one)")
    media_root: Path | None = _setting(
        None, "folder whose videos, frame folders and pictures clients may open by relative path "
              "(never outside it); none: uploads only")
    token: str | None = _setting(None, "require `Authorization: Bearer TOKEN` on every /api call",
                                 secret=True)
    insecure: bool = _setting(False, "allow a non-loopback --host without --token")
    max_upload_mb: float = _setting(512.0, "largest upload accepted, in MB (larger: 413, read no further)")
    max_pixels: int = _setting(40_000_000, "largest picture or video frame, in pixels (width x height)")
    max_sessions: int = _setting(8, "video sessions open at once; the least recently used is closed "
                                    "to make room")
    session_ttl: float = _setting(1800.0, "seconds a video session may stay idle before it is closed")
    max_images: int = _setting(16, "pictures whose embedding is kept (least recently used dropped)")
    spill_limit_gb: float = _setting(
        20.0, "disk all video sessions together may use for results kept out of memory, in GB "
              "(about 0.75 MB per frame and object at 1024 px)")
    workers: int = _setting(2, "threads for model jobs: one for what a person waits for (clicks, opening a "
                                  "picture), the rest, at low CPU priority, for tracking, everything-masks "
                                  "and exports")
    queue: int = _setting(16, "model jobs that may wait; beyond it requests get 503 with Retry-After")
    cvat_trackers: int = _setting(16, "shapes CVAT may track at once through /cvat/tracker (each a stream "
                                      "session in flat memory); the least recently used is dropped")
    cvat_tracker_ttl: float = _setting(600.0, "seconds a CVAT track may wait for its next frame before it is dropped")
    header_timeout: float = _setting(10.0, "seconds a client may take to send a request's headers; a "
                                           "slower one is disconnected")
    keep_alive_timeout: float = _setting(5.0, "seconds an idle keep-alive connection is kept open")
    stream_send_timeout: float = _setting(
        30.0, "seconds a streamed answer (tracking) may wait for a client that does not read it; past it "
              "the stream is ended and the tracking stops")
    max_connections: int = _setting(256, "connections served at once; beyond it new requests get 503")
    cors_origins: str | None = _setting(
        None, "comma-separated origins (e.g. https://app.example) whose pages may call this API from a "
              "browser (CORS); none: only the server's own page")
    work_dir: Path | None = _setting(None, "where uploads and exports live while used (default: a "
                                           "fresh folder in the temporary folder, removed at exit)")

    label_studio_url: str | None = _setting(
        None, "Label Studio's address, for task files under its /data/... URLs (default: the environment's "
              "LABEL_STUDIO_URL)")
    label_studio_api_key: str | None = _setting(
        None, "Label Studio access token (legacy or personal) sent when fetching its files (default: the "
              "environment's LABEL_STUDIO_API_KEY)", secret=True)
    fetch_max_mb: float = _setting(256.0, "largest picture or video fetched from a task's URL, in MB")
    fetch_timeout: float = _setting(30.0, "seconds a fetch of a task's picture or video may take in all")
    label_studio_max_frames: int = _setting(
        100, "frames a Label Studio video rectangle is tracked through, its own frame included")
    label_studio_preannotate: str = _setting(
        "auto", "what Label Studio's pre-annotation (no clicks) gets: 'auto' (every mask), a prompt in percent "
                "('X,Y' a point, 'X0,Y0,X1,Y1' a box), or 'off'")
    label_studio_points_per_side: int = _setting(16, "grid of points per side for 'auto' pre-annotation")
    polygon_tolerance: float = _setting(1.0, "Douglas-Peucker tolerance in pixels of polygons sent to "
                                             "PolygonLabels (0: every traced vertex)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)

    @property
    def cors_list(self) -> list[str]:
        """The CORS origins, one string each (empty: CORS closed)."""
        return [o.strip().rstrip("/") for o in (self.cors_origins or "").split(",") if o.strip()]

    @property
    def spill_limit_bytes(self) -> int:
        return int(self.spill_limit_gb * 1e9)

    def check(self) -> None:
        """ValueError for a value no server can run with."""
        for name in ("max_upload_mb", "max_pixels", "max_sessions", "session_ttl", "max_images",
                     "spill_limit_gb", "workers", "cvat_trackers", "cvat_tracker_ttl", "fetch_max_mb",
                     "fetch_timeout", "label_studio_max_frames", "label_studio_points_per_side",
                     "header_timeout", "keep_alive_timeout", "stream_send_timeout", "max_connections"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.polygon_tolerance < 0:
            raise ValueError(f"polygon-tolerance must be 0 or more, got {self.polygon_tolerance}")
        from sam2kit.formats.labelstudio import parse_preannotate

        parse_preannotate(self.label_studio_preannotate)  # (ValueError naming the forms it takes)
        if self.queue < 0:
            raise ValueError(f"queue must be 0 or more, got {self.queue}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.media_root is not None and not Path(self.media_root).is_dir():
            raise ValueError(f"media root {str(self.media_root)!r} is not a folder; give an existing "
                             "folder with --media-root")
        for origin in self.cors_list:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} is not an origin; give scheme, host and port, "
                                 "e.g. --cors-origins https://app.example:8443")
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ValueError(f"binding {self.host} exposes the model to the network without a token; "
                             "give --token TOKEN (clients then send `Authorization: Bearer TOKEN`), "
                             "or --insecure if that is really meant")

    def public(self) -> dict:
        """The settings as shown to clients (the token never)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = value is not None
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    @staticmethod
    def described() -> list[tuple[str, object, str]]:
        """(name, default, help) of every setting, in order."""
        return [(f.name, f.default, f.metadata["help"]) for f in fields(ServeSettings)]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


__all__ = ["ServeSettings", "is_loopback"]
