"""Video object segmentation benchmarks on disk: their folder layouts, the videos, frames and
annotations in them, and reading and writing their masks.

Layouts (the ``layout`` names):

``davis``  DAVIS 2017: ``JPEGImages/480p/<seq>/00000.jpg``, ``Annotations/480p/<seq>/00000.png``
           (indexed "P" PNGs: 0 background, k object k, 255 void), the sequence lists in
           ``ImageSets/2017/<split>.txt``.
``ytvos``  YouTube-VOS: ``valid/JPEGImages/<vid>/*.jpg``, ``valid/Annotations/<vid>/*.png``
           (palette PNGs on the frames where objects are first annotated: objects appear later).
``sav``    SA-V: ``JPEGImages_24fps/<vid>/*.jpg``, ``Annotations_6fps/<vid>/<obj>/*.png`` (one PNG
           per object and annotated frame, the object where the pixel is > 0).

Predictions use the annotations' layout: ``<vid>/<frame>.png`` palette PNGs (davis, ytvos) or
``<vid>/<obj>/<frame>.png`` (sav), the layouts the official evaluators read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sam2kit.errors import DatasetError
from sam2kit.outputs import davis_palette

__all__ = ["Dataset", "DatasetError", "ObjectPrompt", "open_dataset", "frame_files", "first_annotations",
           "read_labels", "read_object_mask", "save_png", "davis_palette", "LAYOUTS", "VOID"]

LAYOUTS = ("davis", "ytvos", "sav")
VOID = 255  # the void label of palette annotations: never an object
JPEG = (".jpg", ".jpeg")
EXPECTED = ("JPEGImages/480p/<seq>/*.jpg with Annotations/480p/<seq>/*.png (DAVIS 2017), "
            "JPEGImages_24fps/<vid>/*.jpg with Annotations_6fps/<vid>/<obj>/*.png (SA-V), or "
            "[valid/]JPEGImages/<vid>/*.jpg with [valid/]Annotations/<vid>/*.png (YouTube-VOS)")


@dataclass(frozen=True)
class Dataset:
    """One split of a benchmark: ``videos`` (in order) with their frames under ``frames_root``
    (None when only annotations were given) and annotations under ``annotations_root``."""

    layout: str
    root: Path
    frames_root: Path | None
    annotations_root: Path
    videos: tuple[str, ...]

    @property
    def per_object(self) -> bool:
        """One PNG per object (SA-V) rather than one palette PNG per frame."""
        return self.layout == "sav"

    def frames_dir(self, video: str) -> Path:
        if self.frames_root is None:
            raise DatasetError(f"{self.root} holds annotations only; give the dataset's root folder "
                               "(with the JPEG frames) to run a model on it")
        return self.frames_root / video

    def annotations_dir(self, video: str) -> Path:
        return self.annotations_root / video


@dataclass(frozen=True)
class ObjectPrompt:
    """An object's first annotation: the object number, the index of its frame in the video's
    frame order, and its mask there ([H, W] bool)."""

    obj_id: int
    frame: int
    mask: np.ndarray


# ---- finding the layout and the videos -----------------------------------------------------

def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _detect(root: Path, split: str | None) -> tuple[str, Path | None, Path] | None:
    """(layout, frames root, annotations root) of a dataset folder, or None."""
    def optional(p: Path) -> Path | None:
        return p if p.is_dir() else None

    for res in ("480p", "Full-Resolution"):
        if (root / "Annotations" / res).is_dir():
            return "davis", optional(root / "JPEGImages" / res), root / "Annotations" / res
    if (root / "Annotations_6fps").is_dir():
        return "sav", optional(root / "JPEGImages_24fps"), root / "Annotations_6fps"
    for base in [root / (split or "valid"), root]:
        if (base / "Annotations").is_dir():
            return "ytvos", optional(base / "JPEGImages"), base / "Annotations"
    # a folder of per-video annotation folders
    for video in _subdirs(root)[:20]:
        entries = [p for p in (root / video).iterdir() if not p.name.startswith(".")]
        if entries and all(p.suffix.lower() == ".png" and p.is_file() for p in entries):
            return "davis", None, root
        if entries and all(p.is_dir() for p in entries):
            return "sav", None, root
    return None


def _read_list(text_or_file) -> list[str]:
    if isinstance(text_or_file, (str, Path)) and Path(text_or_file).is_file():
        return [line.strip() for line in Path(text_or_file).read_text().splitlines() if line.strip()]
    if isinstance(text_or_file, str):
        return [s.strip() for s in text_or_file.split(",") if s.strip()]
    return [str(s) for s in text_or_file]


def open_dataset(path, layout: str | None = None, sequences=None, split: str | None = None,
                 frames: bool = True) -> Dataset:
    """The dataset at ``path``: a dataset root in one of LAYOUTS or (``frames=False``) a folder
    of per-video annotation folders. ``sequences``: names (a list, or comma-separated text) or
    a text file with one name a line; default: DAVIS's ``ImageSets/2017/<split>.txt`` (split
    ``val``) when present, else every annotated video. ``frames``: the JPEG frames are needed.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist or is not a folder; check the path")
    found = _detect(root, split)
    if found is None:
        names = ", ".join(_subdirs(root)[:8]) or "no folders"
        raise DatasetError(f"{root} is in none of the known layouts: expected {EXPECTED} (found: {names})")
    kind, frames_root, ann_root = found
    if layout is not None and layout not in (kind, "davis" if kind == "ytvos" else kind):
        raise DatasetError(f"{root} is in the {kind} layout, not {layout}; leave out --layout or give "
                           f"a {layout} dataset")
    if frames and frames_root is None:
        raise DatasetError(f"{root} holds annotations but no JPEG frames; give the dataset root: "
                           f"expected {EXPECTED}")
    annotated = _subdirs(ann_root)
    if sequences is not None:
        videos = _read_list(sequences)
    elif kind == "davis" and (root / "ImageSets" / "2017" / f"{split or 'val'}.txt").is_file():
        videos = _read_list(root / "ImageSets" / "2017" / f"{split or 'val'}.txt")
    elif split is not None and kind == "davis" and frames_root is not None:
        raise DatasetError(f"no sequence list {root / 'ImageSets' / '2017' / f'{split}.txt'}; check --split")
    else:
        videos = annotated
    missing = [v for v in videos if v not in set(annotated)]
    if missing:
        raise DatasetError(f"{len(missing)} video(s) have no annotation folder in {ann_root}: "
                           f"{', '.join(missing[:5])}; check the sequence names or the list")
    if frames and frames_root is not None:
        no_frames = [v for v in videos if not (frames_root / v).is_dir()]
        if no_frames:
            raise DatasetError(f"{len(no_frames)} video(s) have no frame folder in {frames_root}: "
                               f"{', '.join(no_frames[:5])}")
    if not videos:
        raise DatasetError(f"no videos in {ann_root}: expected {EXPECTED}")
    return Dataset(kind, root, frames_root, ann_root, tuple(videos))


# ---- one video's frames and first annotations ----------------------------------------------

def _number(p: Path) -> int:
    if not re.fullmatch(r"\d+", p.stem):
        raise DatasetError(f"cannot order {p}: benchmark frames and annotations are numbered "
                           "(00000.jpg, 00000.png, ...)")
    return int(p.stem)


def frame_files(ds: Dataset, video: str) -> list[Path]:
    """The video's JPEG frames in frame order (numeric), as tools/vos_inference.py lists them."""
    folder = ds.frames_dir(video)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in JPEG), key=_number)
    if not files:
        raise DatasetError(f"no JPEG frames in {folder}")
    return files


def _pngs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=_number)


def first_annotations(ds: Dataset, video: str, frame_names: list[str]) -> tuple[list[ObjectPrompt], list | None]:
    """Each object's mask on the first frame where it is annotated (the semi-supervised
    protocol; objects appearing later included), by object number; and the annotations'
    palette (None for per-object PNGs without one). ``frame_names``: the frames' stems in
    order. Palette layouts: an object is annotated where its number occurs; SA-V: where its
    folder has a PNG (even an empty one, as tools/vos_inference.py prompts it)."""
    index = {name: i for i, name in enumerate(frame_names)}
    folder = ds.annotations_dir(video)

    def frame_of(p: Path) -> int:
        if p.stem not in index:
            raise DatasetError(f"annotation {p} has no frame {p.stem}.jpg in {ds.frames_dir(video)}")
        return index[p.stem]

    prompts: dict[int, ObjectPrompt] = {}
    palette = None
    if ds.per_object:
        for name in _subdirs(folder):
            if not name.isdigit():
                raise DatasetError(f"object folder {folder / name} is not numbered (000, 001, ...)")
            files = _pngs(folder / name)
            if files:
                mask, pal = read_object_mask(files[0], with_palette=True)
                palette = palette or pal
                prompts[int(name)] = ObjectPrompt(int(name), frame_of(files[0]), mask)
    else:
        for p in _pngs(folder):
            labels, pal = read_labels(p)
            palette = palette or pal
            counts = np.bincount(labels.ravel(), minlength=256)
            for k in np.flatnonzero(counts[1:VOID]) + 1:
                if int(k) not in prompts:
                    prompts[int(k)] = ObjectPrompt(int(k), frame_of(p), labels == k)
    if not prompts:
        raise DatasetError(f"no annotated object in {folder}")
    return [prompts[k] for k in sorted(prompts)], palette


# ---- masks ----------------------------------------------------------------------------------

def read_labels(path: Path) -> tuple[np.ndarray, list | None]:
    """A palette ("P") PNG: its pixel values [H, W] uint8 (0 background, k object k, 255 void)
    and its palette."""
    try:
        with Image.open(path) as im:
            if im.mode != "P":
                raise DatasetError(f"{path} is a mode {im.mode} PNG, not an indexed one (mode P): "
                                   "DAVIS-layout masks hold the object number as a palette index; "
                                   "save them with PIL as Image.fromarray(labels).putpalette(palette)")
            return np.asarray(im), im.getpalette()
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"cannot read mask {path}: {e}") from None


def read_object_mask(path: Path, with_palette: bool = False):
    """A per-object PNG (SA-V): [H, W] bool, the object where the value is > 0 (and the palette)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                raise DatasetError(f"{path} is a mode {im.mode} PNG; a per-object mask is a single-"
                                   "channel PNG (mode P, L or 1) with the object where it is > 0")
            mask = np.asarray(im) > 0
            return (mask, im.getpalette() if im.mode == "P" else None) if with_palette else mask
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"cannot read mask {path}: {e}") from None


def save_png(path: Path, labels: np.ndarray, palette: list | None = None) -> None:
    """Write [H, W] uint8 values as an indexed PNG with ``palette`` (default: DAVIS's)."""
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels, np.uint8).tobytes())
    img.putpalette(palette or davis_palette())
    img.save(path)


def listdir_videos(folder: Path) -> list[str]:
    """Per-video folders of a prediction folder (hidden and ``*.partial-*`` ones left out)."""
    return [n for n in _subdirs(folder) if ".partial-" not in n]
