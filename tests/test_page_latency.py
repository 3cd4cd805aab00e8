"""Click-to-mask in the page: from the click event to the mask drawn on the canvas, measured by
the page itself (``window.sam2kit.latencies()``), tiny at 1024 with the picture's embedding
cached, beside the API's own time for the same kind of request (one click, three masks).

The figures are printed and written to out/page-tests/latency/latency.json with the CPU and
the load average while measuring; they are reported in the README. Nothing here asserts on
time (the machine may be busy): only that every click was measured and drawn.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import httpx
import numpy as np
import pytest

from page_harness import SCREENSHOTS, Browser, Server, need_browser, point_on_canvas, random_checkpoint, settle

SIZE = (600, 400)
CLICKS = [(80 + 55 * i, 120 + 160 * (i % 2)) for i in range(8)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    folder = tmp_path_factory.mktemp("page_latency")
    srv = Server(random_checkpoint(folder / "tiny.pt"), 1024)
    yield srv
    srv.stop()


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def test_click_to_mask_latency(server):
    b = Browser("latency")
    try:
        page = b.page
        page.goto(server.url)
        settle(page)
        with page.expect_response(lambda r: r.url.endswith("/api/images")) as info:
            page.get_by_role("button", name="Sample photo").click()
        settle(page, timeout=180_000)
        image_id = info.value.json()["image_id"]
        load_before = os.getloadavg()
        for x, y in [(300, 200), *CLICKS]:  # the first warms the server's predictor up
            page.keyboard.press("n")  # each click a new object: one click, as the API timing below
            with page.expect_response(lambda r: "/predict" in r.url):
                page.mouse.click(*point_on_canvas(page, x, y, SIZE))
            settle(page)
        page_ms = page.evaluate("window.sam2kit.latencies()")
        b.shot("latency")
    finally:
        b.close()
    assert len(page_ms) == len(CLICKS) + 1 and all(ms > 0 for ms in page_ms)

    api_ms = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for x, y in CLICKS:
            t = time.perf_counter()
            r = client.post(f"api/images/{image_id}/predict", json={"points": [[x, y]], "labels": [1]})
            api_ms.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
    load_after = os.getloadavg()

    page_ms = page_ms[1:]
    report = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "model": "sam2-hiera-tiny (random weights) at 1024",
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        "page_click_to_mask_ms": {"median": round(statistics.median(page_ms), 1),
                                  "p90": round(float(np.percentile(page_ms, 90)), 1),
                                  "min": round(min(page_ms), 1), "all": [round(v, 1) for v in page_ms]},
        "api_predict_ms": {"median": round(statistics.median(api_ms), 1),
                           "min": round(min(api_ms), 1), "all": [round(v, 1) for v in api_ms]},
    }
    out = SCREENSHOTS / "latency" / "latency.json"
    out.write_text(json.dumps(report, indent=2))
    print("\nclick-to-mask in the page:", json.dumps(report, indent=2))
