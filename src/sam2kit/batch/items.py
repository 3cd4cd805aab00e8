"""What a batch works on: items found from files, folders (recursively), globs and manifests,
on local disk or in an object store (any fsspec URL, e.g. ``s3://bucket/photos/``).

An item is one image (``--task image|auto``) or one video (``--task video``: a video file, or a
folder whose files are numbered JPEG/PNG frames). Its ``key`` is its path relative to its input
root, in POSIX form; the batch writes its outputs to ``OUT/<key>/``:

- a folder input is its own root (``photos/a/b.jpg`` from input ``photos`` -> ``a/b.jpg``); a
  frame folder given directly is keyed by its own name;
- a file input's root is its folder (``photos/a/b.jpg`` -> ``b.jpg``);
- a glob's root is its folder before the first wildcard (``photos/*/b*.jpg`` -> ``a/b.jpg``);
- a manifest's root is the manifest's folder; paths outside it (absolute paths, other URLs)
  keep their whole path without the leading ``/`` or ``scheme://``; an entry's ``"output"``
  names its key explicitly.

Names starting with ``.`` are skipped when folders are walked. Manifest lines may carry the
item's own prompts, which replace the batch's default prompt for that item (docs/batch.md);
here they are parsed into the job's typed prompts (``sam2kit.jobs.items.ItemPrompts``).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass

import numpy as np

from sam2kit.video.io import VIDEO_EXTENSIONS

from sam2kit.batch.storage import is_remote, url_to_fs
from sam2kit.errors import ManifestError as InputError
from sam2kit.jobs import prompts as P
from sam2kit.jobs.items import ItemPrompts

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # what a frame folder holds (sam2kit video)
TASKS = ("image", "auto", "video")
RESERVED = ("annotations.json", "batch.sqlite", ".batch")  # OUT's own entries
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Item:
    """One unit of work. ``source``: an absolute local path or a URL. ``prompts``: the item's
    own prompts, typed as the job's (``ItemPrompts``), None for the batch's default prompt."""

    key: str
    source: str
    prompts: ItemPrompts | None = None


# ---- files, folders and globs -------------------------------------------------------------

def discover(inputs: list[str], task: str, exclude: str | None = None) -> list[Item]:
    """Items of ``inputs`` (paths, folders, globs or URLs) for ``task``, sorted by key.
    ``exclude``: a local folder whose contents are never items (the batch's own output)."""
    items: list[Item] = []
    for text in inputs:
        found = _discover_one(text, task, exclude)
        if not found:
            raise InputError(f"input {text!r} holds no {_what(task)}; check the path or pattern "
                             f"({'/'.join(IMAGE_EXTENSIONS if task != 'video' else VIDEO_EXTENSIONS)}"
                             f"{' or folders of numbered frames' if task == 'video' else ''})")
        items += found
    return check_unique(items)


def _what(task: str) -> str:
    return "videos (files or frame folders)" if task == "video" else "images"


def _discover_one(text: str, task: str, exclude: str | None) -> list[Item]:
    fs, path = url_to_fs(text)
    if not is_remote(text):
        path = posixpath.normpath(path)  # "a/../b": keys and the output's exclusion compare paths
    full = (lambda p: fs.unstrip_protocol(p)) if is_remote(text) else (lambda p: p)
    if _GLOB.search(path):
        static = path[:_GLOB.search(path).start()]
        root = static if static.endswith("/") else posixpath.dirname(static)
        out = []
        for match in sorted(fs.glob(path)):
            if _hidden(posixpath.relpath(match, root or ".")):  # as the shell's globs do
                continue
            if fs.isdir(match):
                out += _walk(fs, match, root.rstrip("/") or "/", task, exclude, full)
            elif _is_item_file(match, task):
                out.append(Item(posixpath.relpath(match, root or "."), full(match)))
        return out
    if fs.isdir(path):
        return _walk(fs, path.rstrip("/") or "/", None, task, exclude, full)
    if fs.isfile(path):
        return [Item(posixpath.basename(path), full(path))]
    raise InputError(f"input {text!r} does not exist; check the path (folders, files, globs such "
                     "as 'photos/*.jpg' in quotes, or object-store URLs such as s3://bucket/photos/)")


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in rel.split("/"))


def _is_item_file(path: str, task: str) -> bool:
    ext = posixpath.splitext(path)[1].lower()
    return ext in (VIDEO_EXTENSIONS if task == "video" else IMAGE_EXTENSIONS)


def _walk(fs, folder: str, root: str | None, task: str, exclude: str | None, full) -> list[Item]:
    """Items under ``folder``, keyed relative to ``root`` (None: ``folder`` itself is the root,
    and a frame folder given directly is keyed by its name)."""
    base = root if root is not None else folder
    files = [f for f in fs.find(folder, withdirs=False)
             if not _hidden(posixpath.relpath(f, folder)) and not (exclude and (f + "/").startswith(exclude.rstrip("/") + "/"))]
    if task != "video":
        return [Item(posixpath.relpath(f, base), full(f)) for f in files if _is_item_file(f, task)]
    out = [Item(posixpath.relpath(f, base), full(f)) for f in files if _is_item_file(f, task)]
    frame_dirs = sorted({posixpath.dirname(f) for f in files
                         if posixpath.splitext(f)[1].lower() in FRAME_EXTENSIONS})
    for d in frame_dirs:
        key = posixpath.basename(d) if root is None and d == folder else posixpath.relpath(d, base)
        out.append(Item(key, full(d)))
    return out


def check_unique(items: list[Item]) -> list[Item]:
    """Items sorted by key; an InputError if two would write to the same output folder, one
    inside another's, or onto the batch's own files."""
    items = sorted(items, key=lambda it: it.key)
    for it in items:
        top = it.key.split("/")[0]
        if it.key in (".", "") or it.key.startswith("../") or top in RESERVED or top.endswith(".sqlite-wal"):
            raise InputError(f"item {it.source!r} would be written to OUT/{it.key}, which is not a "
                             "place for it; give it an \"output\" name in the manifest")
    for a, b in zip(items, items[1:]):
        if a.key == b.key or b.key.startswith(a.key + "/"):
            raise InputError(f"{a.source!r} and {b.source!r} would both be written to OUT/{a.key}; "
                             "give inputs whose paths relative to their roots differ (or \"output\" "
                             "names in a manifest)")
    return items


# ---- manifests ----------------------------------------------------------------------------

def read_manifest(text: str, task: str) -> list[Item]:
    """Items of a JSONL manifest (a local path or URL): one JSON object a line with ``"path"``
    and, optionally, ``"output"`` and the item's prompts:

    - image: ``"points": [[x, y], ...]`` with ``"labels": [1|0, ...]`` (default all 1) and at
      most one ``"box": [x0, y0, x1, y1]`` (one prompt), or ``"boxes": [[x0, y0, x1, y1], ...]``
      (one prompt each), or ``"grid": "RxC"``;
    - video: ``"prompts": [{"frame": F, "object": OBJ, "points": ..., "labels": ..., "box": ...}]``
      (frame 0 and object 1 by default; any frames and objects).

    Coordinates are pixels, or strings with ``%`` (percentages of the width and height)."""
    fs, path = url_to_fs(text)
    remote = is_remote(text)
    root = posixpath.dirname(path)
    try:
        with fs.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise InputError(f"manifest {text!r} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise InputError(f"manifest {text!r} is not UTF-8 text; write one JSON object a line") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"manifest {text!r} line {n}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not JSON ({e.msg}); write one JSON object a line") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise InputError(f"{where}: expected an object with a \"path\", e.g. "
                             "{\"path\": \"photos/a.jpg\", \"points\": [[120, 80]]}")
        item_path, key = _manifest_place(entry, fs, root, remote)
        source = item_path if is_remote(item_path) or not remote else fs.unstrip_protocol(item_path)
        items.append(Item(key, source, _typed(_manifest_prompts(entry, task, where), task, where)))
    if not items:
        raise InputError(f"manifest {text!r} lists no items")
    return items


def _manifest_place(entry: dict, fs, root: str, remote: bool) -> tuple[str, str]:
    p = entry["path"]
    if is_remote(p):
        item_path, key = p, p.split("://", 1)[1]
    elif p.startswith("/"):
        item_path, key = p, p.lstrip("/")
    else:
        item_path = posixpath.normpath(posixpath.join(root, p))
        key = posixpath.relpath(item_path, root) if not remote else posixpath.normpath(p)
        if key.startswith("../"):
            key = item_path.lstrip("/")
    if "output" in entry:
        if not isinstance(entry["output"], str) or not entry["output"].strip("/"):
            raise InputError(f"\"output\" of {p!r} must be a relative folder name")
        key = posixpath.normpath(entry["output"].strip("/"))
    return item_path, key.rstrip("/")


def _num(v, where: str) -> str:
    """A coordinate as the command line writes it: a plain decimal, or a percentage string."""
    if isinstance(v, str) and re.fullmatch(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)\s*%?\s*", v):
        return v.strip()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise InputError(f"{where}: expected a number (or a percentage such as \"50%\"), got {v!r}")
    return np.format_float_positional(float(v), trim="-")


def _coords(v, n: int, what: str, where: str) -> str:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise InputError(f"{where}: {what} must be a list of {n} numbers, got {v!r}")
    return ",".join(_num(c, where) for c in v)


def _points(entry: dict, where: str) -> list[str]:
    """Each point as X,Y:LABEL."""
    points = entry.get("points") or []
    if not isinstance(points, list):
        raise InputError(f"{where}: \"points\" must be a list of [x, y] pairs")
    labels = entry.get("labels", [1] * len(points))
    if not isinstance(labels, list) or len(labels) != len(points) or any(l not in (0, 1) for l in labels):
        raise InputError(f"{where}: \"labels\" must be one 1 (foreground) or 0 (background) per point")
    return [f"{_coords(p, 2, 'a point', where)}:{int(l)}" for p, l in zip(points, labels)]


def _manifest_prompts(entry: dict, task: str, where: str) -> tuple[str, ...]:
    keys = {"points", "labels", "box", "boxes", "grid", "prompts"} & entry.keys()
    if task == "auto":
        if keys:
            raise InputError(f"{where}: --task auto segments everything and takes no prompts "
                             f"({', '.join(sorted(keys))}); remove them or use --task image")
        return ()
    if task == "video":
        if keys - {"prompts"}:
            raise InputError(f"{where}: video prompts go in \"prompts\": [{{\"frame\": 0, \"object\": 1, "
                             "\"points\": [[x, y]], \"labels\": [1], \"box\": [x0, y0, x1, y1]}]")
        return _video_prompts(entry.get("prompts") or [], where)
    if "prompts" in keys:
        raise InputError(f"{where}: image prompts are \"points\"/\"labels\", \"box\", \"boxes\" or "
                         "\"grid\" (\"prompts\" is for videos)")
    tokens = [f"--point={p}" for p in _points(entry, where)]
    boxes = entry.get("boxes", [])
    if "box" in entry:
        boxes = [entry["box"], *boxes]
    if not isinstance(boxes, list):
        raise InputError(f"{where}: \"boxes\" must be a list of [x0, y0, x1, y1] boxes")
    tokens += [f"--box={_coords(b, 4, 'a box', where)}" for b in boxes]
    if "grid" in entry:
        tokens.append(f"--grid={entry['grid']}")
    return tuple(tokens)


def _video_prompts(prompts, where: str) -> tuple[str, ...]:
    if not isinstance(prompts, list):
        raise InputError(f"{where}: \"prompts\" must be a list of objects")
    tokens: list[str] = []
    for p in prompts:
        if not isinstance(p, dict) or not ({"points", "box"} & p.keys()):
            raise InputError(f"{where}: each video prompt needs \"points\" or a \"box\", e.g. "
                             "{\"frame\": 0, \"object\": 1, \"points\": [[120, 80]]}")
        frame, obj = p.get("frame", 0), p.get("object", 1)
        if not isinstance(frame, int) or frame < 0 or not isinstance(obj, int) or obj < 1:
            raise InputError(f"{where}: \"frame\" must be a frame index (0, 1, ...) and \"object\" "
                             f"a positive object number, got {frame!r} and {obj!r}")
        tokens += [f"--point={frame}:{pt}@{obj}" for pt in _points(p, where)]
        if "box" in p:
            tokens.append(f"--box={frame}:{_coords(p['box'], 4, 'a box', where)}@{obj}")
    return tuple(tokens)


def _typed(tokens: tuple[str, ...], task: str, where: str) -> ItemPrompts | None:
    """The manifest's prompts, written as the command line writes them, parsed into the job's
    typed prompts (None: the batch's default prompt); a bad one names its line."""
    if not tokens:
        return None
    parse = {"--point": P.video_point if task == "video" else P.image_point,
             "--box": P.video_box if task == "video" else P.image_box, "--grid": P.grid}
    found: dict[str, list] = {"--point": [], "--box": [], "--grid": []}
    for token in tokens:
        flag, _, text = token.partition("=")
        try:
            found[flag].append(parse[flag](text))
        except P.PromptError as e:
            raise InputError(f"{where}: {e}") from None
    return ItemPrompts(tuple(found["--point"]), tuple(found["--box"]),
                       found["--grid"][-1] if found["--grid"] else None)
