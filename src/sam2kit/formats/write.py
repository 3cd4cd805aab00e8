"""One entry point for every export format: `write_formats(out_dir, ["coco-polygons", "yolo"])`
reads a command's output folder (results.json + mask PNGs) and writes each format beside them,
each file atomically.

| name            | writes                                 | reader                                   |
|-----------------|----------------------------------------|------------------------------------------|
| `coco-polygons` | `coco_polygons.json`                   | pycocotools `COCO`                       |
| `coco-rle`      | `coco_rle.json`                        | pycocotools `COCO`                       |
| `yolo`          | `yolo/labels/<stem>.txt`, `yolo/data.yaml` | ultralytics (segment task)            |
| `cvat-xml`      | `cvat.xml` (images 1.1, or video 1.1)  | CVAT "Upload annotations", CVAT 1.1      |
| `labelstudio`   | `labelstudio.json` (tasks with predictions) | Label Studio "Import" (label_studio_sdk) |

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


def _labelstudio(doc: Document, out_dir: Path, tolerance: float) -> list[Path]:
    """Import-ready Label Studio tasks: a picture's masks as brush regions (the labeling config
    ``formats.labelstudio.config_for_masks`` gives), or a video's objects as videorectangle
    sequences (the boxes of their masks, frames from 1)."""
    import json

    from .labelstudio import box_percent, pre_annotation_task, prediction, videorectangle_sequence

    if doc.kind == "video":
        results = []
        for obj in doc.track_ids:
            boxes = {}
            for fr in doc.frames:
                inst = next((i for i in fr.instances if i.track_id == obj), None)
                boxes[fr.index] = box_percent(inst.mask()) if inst is not None else None
            seq = videorectangle_sequence(boxes, doc.extra.get("fps"))
            if seq:
                results.append({"id": f"obj{obj}", "from_name": "box", "to_name": "video", "type": "videorectangle",
                                "value": {"sequence": seq, "labels": [doc.labels[0]],
                                          "framesCount": len(doc.frames)}})
        tasks = [{"data": {"video": doc.source}, "predictions": [prediction(results, None, "sam2kit")]}]
    else:
        tasks = []
        for fr in doc.frames:  # an empty mask makes no region (as in COCO)
            kept = [(m, i) for i in fr.instances if (m := i.mask()).any()]
            tasks.append(pre_annotation_task(doc.source, [m for m, _ in kept], [i.score for _, i in kept],
                                             [i.label for _, i in kept]))
    write_atomic(out_dir / "labelstudio.json", json.dumps(tasks, indent=1))
    return [out_dir / "labelstudio.json"]


register("coco-polygons", _coco("polygons", "coco_polygons.json"))
register("coco-rle", _coco("rle", "coco_rle.json"))
register("yolo", _yolo)
register("cvat-xml", _cvat)
register("labelstudio", _labelstudio)
