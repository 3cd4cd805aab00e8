"""One entry point for every export format: `write_formats(out_dir, ["coco-polygons", "yolo"])`
reads a command's output folder (results.json + mask PNGs) and writes each format beside them,
each file atomically.

| name            | writes                                 | reader                                   |
|-----------------|----------------------------------------|------------------------------------------|
| `coco-polygons` | `coco_polygons.json`                   | pycocotools `COCO`                       |
| `coco-rle`      | `coco_rle.json`                        | pycocotools `COCO`                       |
| `yolo`          | `yolo/labels/<stem>.txt`, `yolo/data.yaml` | ultralytics (segment task)            |
| `cvat-xml`      | `cvat.xml` (images 1.1, or video 1.1)  | CVAT "Upload annotations", CVAT 1.1      |

Other modules add formats with `register(name, writer)`; a writer is
`writer(doc: Document, out_dir: Path, tolerance: float) -> list[Path]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .document import Document, load_document, write_atomic
from .polygons import DEFAULT_TOLERANCE

Writer = Callable[[Document, Path, float], list[Path]]
_WRITERS: dict[str, Writer] = {}


def register(name: str, writer: Writer) -> None:
    _WRITERS[name] = writer


def format_names() -> list[str]:
    return sorted(_WRITERS)


def parse_formats(text: str) -> list[str]:
    """"coco-polygons,yolo" -> ["coco-polygons", "yolo"]; ValueError naming the known formats."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in _WRITERS]
    if unknown or not names:
        raise ValueError(f"unknown export format {', '.join(unknown) or repr(text)}: choose from "
                         f"{', '.join(format_names())} (comma-separated)")
    return list(dict.fromkeys(names))


def write_formats(out_dir: Path, formats: list[str], results: dict | None = None,
                  tolerance: float = DEFAULT_TOLERANCE, label: str = "object") -> list[Path]:
    """Write `formats` for the command output in `out_dir`; returns the files written."""
    names = parse_formats(",".join(formats))
    doc = load_document(Path(out_dir), results, label)
    written = []
    for name in names:
        written += _WRITERS[name](doc, Path(out_dir), tolerance)
    return written


def _coco(mode: str, file: str) -> Writer:
    def write(doc: Document, out_dir: Path, tolerance: float) -> list[Path]:
        from .coco import coco_json

        write_atomic(out_dir / file, coco_json(doc, mode=mode, tolerance=tolerance))
        return [out_dir / file]
    return write


def _yolo(doc: Document, out_dir: Path, tolerance: float) -> list[Path]:
    from .yolo import write_yolo

    return write_yolo(doc, out_dir / "yolo", tolerance)


def _cvat(doc: Document, out_dir: Path, tolerance: float) -> list[Path]:
    from .cvat import images_xml, video_xml

    text = video_xml(doc, tolerance) if doc.kind == "video" else images_xml(doc)
    write_atomic(out_dir / "cvat.xml", text)
    return [out_dir / "cvat.xml"]


register("coco-polygons", _coco("polygons", "coco_polygons.json"))
register("coco-rle", _coco("rle", "coco_rle.json"))
register("yolo", _yolo)
register("cvat-xml", _cvat)
