"""What the export formats are written from: a `Document` of frames (one for an image, one per
video frame), each with its instances (a mask, a label, a score, a track id), read from the
results.json and mask PNGs that `sam2kit image`, `image --auto` and `video` write.

Masks are read from their PNGs only when a writer asks (`Instance.mask()`), so a long video is
never held in memory at once.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_LABEL = "object"


@dataclass(frozen=True)
class Instance:
    """One object on one frame: `mask_path` an 8-bit PNG (nonzero = object) of the frame's size."""

    mask_path: Path
    label: str = DEFAULT_LABEL
    score: float | None = None
    track_id: int | None = None

    def mask(self) -> np.ndarray:
        """[H, W] bool."""
        with Image.open(self.mask_path) as im:
            return np.asarray(im.convert("L")) > 0


@dataclass(frozen=True)
class Frame:
    """A picture: `index` (frame number, 0 for an image), `file_name` as the results name it,
    its size in pixels, and its instances."""

    index: int
    file_name: str
    width: int
    height: int
    instances: tuple[Instance, ...] = ()


@dataclass(frozen=True)
class Document:
    """`kind` "image" (one frame per picture) or "video" (frames of one video, `track_ids` its objects)."""

    kind: str
    frames: tuple[Frame, ...]
    labels: tuple[str, ...] = (DEFAULT_LABEL,)
    track_ids: tuple[int, ...] = ()
    source: str = ""
    extra: dict = field(default_factory=dict)


def load_document(out_dir: Path, results: dict | None = None, label: str = DEFAULT_LABEL) -> Document:
    """The Document of one command's output folder (its results.json unless `results` is given)."""
    out_dir = Path(out_dir)
    if results is None:
        results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    command = results.get("command")
    if command == "image":
        img = results["image"]
        inst = tuple(Instance(out_dir / e["mask_file"], label, e.get("score")) for e in results["prompts"])
        frames = (Frame(0, Path(img["path"]).name, img["width"], img["height"], inst),)
        return Document("image", frames, (label,), source=img["path"])
    if command == "image --auto":
        (img,) = results["images"]
        inst = tuple(Instance(out_dir / a["mask_file"], label, a.get("predicted_iou"))
                     for a in results["annotations"])
        frames = (Frame(0, Path(img["file_name"]).name, img["width"], img["height"], inst),)
        return Document("image", frames, (label,), source=img["file_name"])
    if command == "video":
        v = results["video"]
        ids = tuple(o["id"] for o in results["objects"])
        frames = tuple(
            Frame(fr["frame"], fr["file"], v["width"], v["height"],
                  tuple(Instance(out_dir / "masks" / str(o["id"]) / f"{fr['frame']:05d}.png", label,
                                 o.get("object_score"), o["id"]) for o in fr["objects"]))
            for fr in sorted(results["frames"], key=lambda fr: fr["frame"]))
        return Document("video", frames, (label,), ids, source=v["path"], extra={"fps": v.get("fps")})
    raise ValueError(f"results.json of command {command!r}: export formats are written for "
                     "'image', 'image --auto' and 'video' results")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `path` through a temporary file in the same folder, renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
