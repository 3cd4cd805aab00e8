"""The evaluation's figures and files: per-object statistics, the global figures under the
official names, results.json, the official CSVs, a table and a chart.

Global figures as davis2017-evaluation's ``evaluation_method.py`` computes them: each of
J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay is the mean over all objects of all
sequences of that object's statistic, and J&F-Mean = (J-Mean + F-Mean) / 2. SA-V's global
J&F is the same mean of per-object means (there in percent).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sam2kit.vos.evaluation.metrics import statistics
from sam2kit.vos.evaluation.sequences import SequenceScores

__all__ = ["MEASURES", "summarise", "output_files", "write_outputs", "table", "chart"]

MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarise(scores: list[SequenceScores], layout: str) -> dict:
    """Per-sequence and per-object statistics and the global figures."""
    per_seq, rows = [], []
    for s in scores:
        objects = []
        for o in s.objects:
            jm, jr, jd = statistics(o.j)
            fm, fr, fd = statistics(o.f)
            row = {"object": o.obj_id, "frames": len(o.frames), "J&F-Mean": (jm + fm) / 2,
                   "J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}
            objects.append(row)
            rows.append(row)
        jf = [o["J&F-Mean"] for o in objects]
        per_seq.append({"sequence": s.name,
                        "J&F-Mean": _num(float(np.mean(jf))) if jf else None,
                        "J-Mean": _num(float(np.mean([o["J-Mean"] for o in objects]))) if objects else None,
                        "F-Mean": _num(float(np.mean([o["F-Mean"] for o in objects]))) if objects else None,
                        "objects": [{k: _num(v) if isinstance(v, float) else v for k, v in o.items()}
                                    for o in objects],
                        "unscored_objects": s.unscored, "seconds": round(s.seconds, 4)})
    glob = {m: math.nan for m in MEASURES}
    if rows:
        for m in MEASURES[1:]:
            glob[m] = float(np.mean([r[m] for r in rows]))  # NaN stays NaN, as np.mean there
        glob["J&F-Mean"] = (glob["J-Mean"] + glob["F-Mean"]) / 2
    return {"global": {m: _num(v) for m, v in glob.items()}, "per_sequence": per_seq,
            "objects": len(rows), "frames_scored": int(sum(len(o.frames) for s in scores for o in s.objects)),
            "missing_predictions": [m for s in scores for m in s.missing],
            "unscored_objects": [f"{s.name}/{k:03d}" for s in scores for k in s.unscored]}


def output_files(layout: str, set_name: str) -> dict[str, str]:
    """The files ``write_outputs`` writes, by role."""
    files = {"results": "results.json", "global_csv": f"global_results-{set_name}.csv",
             "per_sequence_csv": f"per-sequence_results-{set_name}.csv", "chart": "jf_per_sequence.png"}
    if layout == "sav":
        files["sav_csv"] = "results.csv"
    return files


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _f3(x) -> str:
    return "" if x is None else f"{x:.3f}"  # pandas' float_format="%.3f", NaN as empty


def _object_name(layout: str, seq: str, obj: int) -> str:
    return f"{seq}_{obj:03d}" if layout == "sav" else f"{seq}_{obj}"


def _contents(doc: dict, layout: str, set_name: str) -> dict[str, bytes]:
    files = output_files(layout, set_name)
    g = doc["global"]
    out = {files["results"]: (json.dumps(doc, indent=2) + "\n").encode(),
           files["global_csv"]: _csv([list(MEASURES), [_f3(g[m]) for m in MEASURES]]).encode(),
           files["per_sequence_csv"]: _csv([["Sequence", "J-Mean", "F-Mean"]] + [
               [_object_name(layout, s["sequence"], o["object"]), _f3(o["J-Mean"]), _f3(o["F-Mean"])]
               for s in doc["per_sequence"] for o in s["objects"]]).encode(),
           files["chart"]: chart(doc)}
    if layout == "sav":  # sav_benchmark's results.csv: percent, one decimal
        pct = lambda x: "nan" if x is None else f"{100 * x:.1f}"  # noqa: E731
        ml = max([len(s["sequence"]) for s in doc["per_sequence"]] + [len("Global score")])
        text = f'{"sequence":<{ml}},{"obj":>3}, {"J&F":>4}, {"J":>4}, {"F":>4}\n'
        text += f'{"Global score":<{ml}},{"":>3}, {pct(g["J&F-Mean"])}, {pct(g["J-Mean"])}, {pct(g["F-Mean"])}\n'
        for s in doc["per_sequence"]:
            for o in s["objects"]:
                text += (f'{s["sequence"]:<{ml}},{o["object"]:03}, {pct(o["J&F-Mean"]):>4}, '
                         f'{pct(o["J-Mean"]):>4}, {pct(o["F-Mean"]):>4}\n')
        out[files["sav_csv"]] = text.encode()
    return out


def write_outputs(doc: dict, out_dir: Path, layout: str, set_name: str, overwrite: bool) -> dict[str, str]:
    """Write results.json, the CSVs and the chart into ``out_dir``, each atomically (a
    temporary file renamed); existing ones are an error unless ``overwrite``. Returns paths."""
    contents = _contents(doc, layout, set_name)
    existing = [n for n in contents if (out_dir / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)} from an earlier evaluation; "
                              "pass --overwrite to replace them, or write elsewhere with -o")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        tmp = out_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, out_dir / name)
    return {role: str(out_dir / name) for role, name in output_files(layout, set_name).items()}


def table(doc: dict) -> str:
    """The global figures and each object's J and F, as the official script prints them."""
    g = doc["global"]
    head = "  ".join(f"{m:>8}" for m in MEASURES)
    lines = ["global results", head, "  ".join(f"{_f3(g[m]):>8}" for m in MEASURES), "",
             "per-sequence results", f"{'Sequence':<28} {'J-Mean':>7} {'F-Mean':>7}"]
    for s in doc["per_sequence"]:
        for o in s["objects"]:
            lines.append(f"{s['sequence'] + '_' + str(o['object']):<28} {_f3(o['J-Mean']):>7} {_f3(o['F-Mean']):>7}")
    return "\n".join(lines)


def chart(doc: dict) -> bytes:
    """A PNG bar chart of each sequence's J&F (the mean of its objects'), best first, with the
    global J&F-Mean marked."""
    seqs = sorted((s for s in doc["per_sequence"] if s["J&F-Mean"] is not None), key=lambda s: -s["J&F-Mean"])
    font = ImageFont.load_default()
    row, left, bar_w, top = 14, 170, 560, 34
    img = Image.new("RGB", (left + bar_w + 60, top + row * max(len(seqs), 1) + 24), "white")
    d = ImageDraw.Draw(img)
    jf = doc["global"]["J&F-Mean"]
    d.text((8, 8), f"J&F per sequence ({len(seqs)} sequences); global J&F-Mean "
                   f"{'n/a' if jf is None else f'{jf:.3f}'}", fill="black", font=font)
    for i, s in enumerate(seqs):
        y = top + i * row
        d.text((8, y), s["sequence"][:26], fill="black", font=font)
        d.rectangle([left, y + 2, left + int(bar_w * max(0.0, s["J&F-Mean"])), y + row - 3], fill=(70, 130, 180))
        d.text((left + bar_w + 6, y), f"{s['J&F-Mean']:.3f}", fill="black", font=font)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + int(bar_w * v)
        d.line([x, top - 4, x, top + row * len(seqs)], fill=(200, 200, 200))
        d.text((x - 8, top + row * len(seqs) + 4), f"{v:g}", fill="black", font=font)
    if jf is not None:
        x = left + int(bar_w * jf)
        d.line([x, top - 6, x, top + row * len(seqs) + 2], fill=(200, 40, 40), width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
