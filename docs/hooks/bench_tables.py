"""MkDocs hook: benchmark tables rendered from the JSON the benchmarks wrote, never typed twice.

A page writes a marker where a table goes::

    <!-- bench: speed amd-epyc-zen4/image.json amd-epyc-zen4/video.json -->
    <!-- bench: kernels amd-epyc-zen4/image.json -->
    <!-- bench: amd-epyc-zen4/openvino/encoder-compare.json -->
    <!-- bench: stream amd-epyc-zen4/stream/memory-10000-bf16.json at=1000,2000,5000,7500,10000 -->

The first word is the kind of table (left out: guessed from the file); then one or more files
under ``benchmarks/results/``; then ``key=value`` options. The marker is replaced by a Markdown
table and a line naming its source files. A missing file, an unknown kind or a file that lacks
what the table needs stops the build (``PluginError``), so a table cannot silently go stale.

Kinds and the JSON they read:

- ``speed``: ``benchmarks/speed.py --json`` (``timings[label][workload][key]``); several files
  are merged (the image workload from one run, the video workload from another). Times in
  seconds, (xN.NN) relative to the reference, >1 is faster or smaller.
- ``kernels``: the ``tuning`` part of a ``speed.py`` file: each choice, its candidates in the
  order given (the default first, as measured), their times and the one chosen.
- ``profile``: the ``profile`` part of ``speed.py --profile``: where a tracked fp32 frame's time
  goes, against the run's measured fp32 matmul peak (``peak_gflops.fp32``).
- ``encoder``: ``benchmarks/openvino_compare.py --json`` (``rows``).
- ``stream``: ``benchmarks/stream.py memory --json``: RSS and peak RSS at the frames ``at=``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"<!--\s*bench:\s*(.*?)\s*-->")
RESULTS = "benchmarks/results"

# (label, workload, key of sam2kit's figure, key of the reference's figure, higher is better)
SPEED_ROWS = [
    ("`set_image` 1024x768 (s)", "image", "set_image_s", "set_image_s", False),
    ("one `predict` (s)", "image", "predict_s", "predict_s", False),
    # the reference decodes the nine prompts one at a time, as its users do: like for like
    ("3x3 workflow, one prompt at a time (s)", "image", "workflow_3x3_one_at_a_time_s", "workflow_3x3_s", False),
    ("3x3 workflow, the nine prompts in one call (s)", "image", "workflow_3x3_s", None, False),
    ("video 640x480, {frames} frames (frames/s)", "video", "video_fps", "video_fps", True),
    ("`init_state` (s)", "video", "init_state_s", "init_state_s", False),
    ("automatic masks, 32x32 grid (s)", "auto", "auto_s", "auto_s", False),
]
RSS_WORKLOADS = ("image", "video", "auto")

ENCODER_LABELS = {
    "reference (torch fp32)": "reference (PyTorch fp32)",
    "sam2kit torch fp32": "sam2kit, PyTorch fp32",
    "sam2kit torch bf16": "sam2kit, PyTorch bf16",
    "sam2kit openvino f32": "sam2kit, OpenVINO f32 (`--backend openvino`)",
    "sam2kit openvino bf16": "sam2kit, **OpenVINO bf16** (`--backend openvino --precision bf16`)",
    "onnxruntime fp32": "ONNX Runtime fp32 (`torch.onnx.export`, CPU provider)",
}


# ---- reading ------------------------------------------------------------------------------------

def parse_marker(text: str, results: Path) -> tuple[str, list[Path], dict]:
    """``"KIND FILE... key=value..."`` -> (kind, paths, options); KIND guessed when left out."""
    words = shlex.split(text)
    kind = None
    if words and not words[0].endswith(".json") and "=" not in words[0]:
        kind = words.pop(0)
    files = [w for w in words if "=" not in w]
    options = dict(w.split("=", 1) for w in words if "=" in w)
    if not files:
        raise PluginError(f"bench marker {text!r} names no JSON file under {RESULTS}/")
    paths = []
    for f in files:
        p = (results / f).resolve()
        if results.resolve() not in p.parents or not p.is_file():
            raise PluginError(f"bench marker {text!r}: no file {RESULTS}/{f}")
        paths.append(p)
    return kind or guess_kind(json.loads(paths[0].read_text())), paths, options


def guess_kind(data: dict) -> str:
    if "timings" in data:
        return "speed"
    if "rows" in data:
        return "encoder"
    if data.get("mode") == "memory":
        return "stream"
    raise PluginError("cannot tell what table this JSON makes; name the kind in the marker")


def need(data: dict, *keys: str, where: str):
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            raise PluginError(f"{where}: no {'.'.join(keys)} in the JSON")
        data = data[k]
    return data


# ---- formatting ---------------------------------------------------------------------------------

def table(head: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(head)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def sci(v: float) -> str:
    """1.17e-06 -> "1.2e-6"; 0 -> "0"."""
    if v == 0:
        return "0"
    m, e = f"{v:.1e}".split("e")
    return f"{m}e{int(e)}"


def mode_label(label: str) -> str:
    return label.replace("openvino-", "OpenVINO ").replace("openvino", "OpenVINO")


# ---- the tables ---------------------------------------------------------------------------------

def speed_table(datas: list[dict], options: dict, where: str) -> str:
    timings: dict[str, dict] = {}
    frames = {}
    for d in datas:
        for label, works in need(d, "timings", where=where).items():
            for workload, figures in works.items():
                timings.setdefault(label, {})[workload] = figures
                if workload == "video":
                    frames[label] = d.get("frames")
    labels = list(timings)
    ref = timings.get("reference", {})
    rows = []
    for name, workload, key, ref_key, higher in SPEED_ROWS:
        cells, present = [], False
        for lb in labels:
            if lb == "reference":
                v = ref.get(workload, {}).get(ref_key) if ref_key else None
                if v is None and ref_key is None and workload in ref:
                    one = ref[workload].get("workflow_3x3_s")
                    cells.append(f"({one:.3f}, one at a time)" if one is not None else "")
                    continue
                cells.append("" if v is None else f"{v:.3f}")
                present |= v is not None
                continue
            v = timings[lb].get(workload, {}).get(key)
            if v is None:
                cells.append("")
                continue
            present = True
            r = ref.get(workload, {}).get(ref_key or "workflow_3x3_s")
            ratio = f" (x{(v / r if higher else r / v):.2f})" if r else ""
            cells.append(f"{v:.3f}{ratio}")
        if present:
            n = next((f for f in frames.values() if f), "?")
            rows.append([name.format(frames=n)] + cells)
    rss = [w for w in RSS_WORKLOADS if any(w in timings[lb] for lb in labels)]
    if rss:
        cells = []
        for lb in labels:
            vals = [timings[lb].get(w, {}).get("peak_rss_mb") for w in rss]
            cells.append(" / ".join("" if v is None else f"{v:.0f}" for v in vals))
        rows.append([f"peak RSS, {' / '.join(rss)} (MB)"] + cells)
    title = options.get("title", "figure (tiny, {threads} threads)").format(threads=datas[0].get("threads", "?"))
    return table([title] + [mode_label(lb) for lb in labels], rows)


def kernels_table(datas: list[dict], options: dict, where: str) -> str:
    tun = need(datas[0], "tuning", where=where)
    rows = []
    for name, d in need(tun, "choices", where=where).items():
        cands = list(d["timings"])
        fastest = sorted(d["timings"].items(), key=lambda kv: kv[1])
        rows.append([f"`{name}`", ", ".join(f"`{c}`" for c in cands),
                     ", ".join(f"{c} {1e3 * s:.1f}" for c, s in fastest), f"`{d['choice']}`"])
    machine = tun.get("machine", "?").replace(" | ", ", ")  # ("|" would split the table's cell)
    return table(["choice", "candidates (default first)",
                  f"measured on {machine} (ms per call, fastest first)", "chosen"], rows)


def profile_table(datas: list[dict], options: dict, where: str) -> str:
    d = datas[0]
    prof = need(d, "profile", where=where)
    peak = need(d, "peak_gflops", "fp32", where=where)
    n = prof["frames"]
    rows = []
    for name, s in sorted(prof["seconds"].items(), key=lambda kv: -kv[1]):
        if s / n < 0.0005:  # (the prompt encoder: nothing to show)
            continue
        f = prof["flops"][name] / 1e9
        rate = f / s
        rows.append([name, f"{s / n:.3f}", f"{f / n:.1f}", f"{rate:.0f}", f"{100 * rate / peak:.1f}%"])
    rest = prof["total_s"] - sum(prof["seconds"].values())
    rows.append(["everything else (decode, resize, upscaling)", f"{rest / n:.3f}", "", "", ""])
    return table(["part of a tracked frame", "s/frame", "GFLOP/frame", "GFLOP/s",
                  f"of the fp32 peak ({peak:.0f})"], rows, ["---", "---:", "---:", "---:", "---:"])


def encoder_table(datas: list[dict], options: dict, where: str) -> str:
    d = datas[0]
    rows = []
    for key, r in need(d, "rows", where=where).items():
        first = next((v for k, v in r.items() if k.startswith("first_load_s")), None)
        later = r.get("later_load_s")
        load = " / ".join(f"{v:g} s" for v in (first, later) if v is not None)
        err = ""
        if "rel. error vision features" in r:
            err = f"{sci(r['rel. error vision features'])} / {sci(r['rel. error high-res features'])}"
        rows.append([ENCODER_LABELS.get(key, key), f"{r['encode_s']:.3f}", f"x{r['speed-up vs reference']:.2f}",
                     load, err])
    return table([f"image encoder ({d.get('cpu', '?')}, {d.get('threads', '?')} threads)", "s", "vs reference",
                  "first load (export + compile) / later", "rel. error, vision / high-res features"], rows)


def stream_table(datas: list[dict], options: dict, where: str) -> str:
    d = datas[0]
    samples = {int(f): v for f, v in need(d, "rss_mb_every_100", where=where)}
    peaks = {int(k): v for k, v in need(d, "peak_rss_mb", where=where).items()}
    at = [int(x) for x in options.get("at", ",".join(str(k) for k in sorted(peaks))).split(",")]

    def peak_so_far(frame: int) -> str:
        if frame in peaks:
            return f"{peaks[frame]:.1f}"
        # the peak so far never falls: between two equal measured peaks it is that value
        before = [k for k in peaks if k <= frame]
        after = [k for k in peaks if k >= frame]
        if before and after and peaks[max(before)] == peaks[min(after)]:
            return f"{peaks[max(before)]:.1f}"
        return ""

    rows = [["RSS (MB)"] + [f"{samples[f]:.0f}" if f in samples else "" for f in at],
            ["peak RSS so far (MB)"] + [peak_so_far(f) for f in at]]
    return table(["frames pushed"] + [f"{f:,}" for f in at], rows)


KINDS = {"speed": speed_table, "kernels": kernels_table, "profile": profile_table,
         "encoder": encoder_table, "stream": stream_table}


def render(marker: str, root: Path) -> str:
    """The Markdown that replaces ``<!-- bench: marker -->`` (``root``: the repository)."""
    results = root / RESULTS
    kind, paths, options = parse_marker(marker, results)
    if kind not in KINDS:
        raise PluginError(f"bench marker {marker!r}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    where = f"bench marker {marker!r}"
    datas = [json.loads(p.read_text()) for p in paths]
    body = KINDS[kind](datas, options, where)
    names = ", ".join(f"`{p.relative_to(root.resolve()).as_posix()}`" for p in paths)
    return f"{body}\n\n<small>Generated from {names}.</small>\n"


def replace_markers(markdown: str, root: Path) -> str:
    return MARKER.sub(lambda m: render(m.group(1), root), markdown)


def on_page_markdown(markdown, page, config, files):  # MkDocs hook
    root = Path(config["config_file_path"]).resolve().parent
    return replace_markers(markdown, root)
