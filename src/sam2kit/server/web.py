"""The page (``sam2kit/web/``, static files shipped in the package) and the bundled samples."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi.staticfiles import StaticFiles

from sam2kit.server.media import BadInput

SAMPLES = {"photo": "sample_photo.png", "video": "sample_video.mp4"}


def package_dir(name: str) -> Path:
    return Path(str(importlib.resources.files("sam2kit") / name))


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise BadInput(422, f"unknown sample {name!r}; use one of {', '.join(SAMPLES)}")
    return package_dir("assets") / SAMPLES[name]


def page() -> StaticFiles | None:
    """The page's files, served at ``/``; None where the package has no page."""
    root = package_dir("web")
    return StaticFiles(directory=root, html=True) if (root / "index.html").is_file() else None
