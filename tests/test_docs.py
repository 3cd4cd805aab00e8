"""The docs site: `mkdocs build --strict` passes (no dead page or anchor link, every benchmark
marker rendered), and the generated benchmark tables carry the numbers of the JSON they come
from. Skipped where MkDocs is not installed, except under CI=true, where that fails."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "amd-epyc-zen4"


def _need_mkdocs():
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed (pip install -e '.[test]' or '.[docs]'); CI builds the docs")
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")


def _hook():
    _need_mkdocs()
    spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "docs" / "hooks" / "bench_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _need_mkdocs()
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_site_builds_strict_with_every_page(site):
    for page in ("cli", "python", "live", "serving", "batch", "datasets", "speed", "models", "design"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "index.html").is_file()
    html = (site / "speed" / "index.html").read_text()
    assert "<!-- bench:" not in html  # every marker was replaced by its table


def test_speed_table_has_the_json_numbers(site):
    image = json.loads((RESULTS / "image.json").read_text())
    video = json.loads((RESULTS / "video.json").read_text())
    ref_set_image = image["timings"]["reference"]["image"]["set_image_s"]
    fp32_fps = video["timings"]["sam2kit fp32"]["video"]["video_fps"]
    ratio = fp32_fps / video["timings"]["reference"]["video"]["video_fps"]
    html = (site / "speed" / "index.html").read_text()
    assert f"<td>{ref_set_image:.3f}</td>" in html
    assert f"<td>{fp32_fps:.3f} (x{ratio:.2f})</td>" in html


def test_stream_table_from_json():
    hook = _hook()
    data = json.loads((RESULTS / "stream" / "memory-10000-bf16.json").read_text())
    md = hook.render("stream amd-epyc-zen4/stream/memory-10000-bf16.json at=1000,10000", ROOT)
    rss = dict((f, v) for f, v in data["rss_mb_every_100"])
    row = next(line for line in md.splitlines() if line.startswith("| RSS (MB)"))
    assert row == f"| RSS (MB) | {rss[1000]:.0f} | {rss[10000]:.0f} |"
    peak = next(line for line in md.splitlines() if line.startswith("| peak RSS so far"))
    assert f"{data['peak_rss_mb']['10000']:.1f}" in peak


def test_missing_json_stops_the_build():
    hook = _hook()
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="no file"):
        hook.replace_markers("<!-- bench: speed amd-epyc-zen4/no-such-run.json -->", ROOT)
    assert re.search(r"\| `linear` \|", hook.replace_markers("<!-- bench: kernels amd-epyc-zen4/image.json -->", ROOT))
