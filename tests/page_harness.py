"""What the page's browser tests share: a real ``sam2kit serve`` in a subprocess, Debian's
Chromium driven by Playwright, and reading what the page drew.

The browser is the system's Chromium (``apt-get install chromium``; ``scripts/test`` installs it
when missing), launched by path: Playwright's own browser download is never used. Without
Playwright or Chromium the tests are skipped, or fail under ``CI=true``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_helpers import Server, random_checkpoint  # noqa: F401 - the tests' imports

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("SAM2KIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "out" / "page-tests"  # git-ignored


def need_browser():
    """Playwright's sync API, or skip (fail under CI=true) naming what is missing."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright is not installed: pip install -e '.[test]' (bash scripts/setup)"
    if problem is None and not CHROMIUM.is_file():
        problem = (f"no Chromium at {CHROMIUM}: apt-get install -y chromium (bash scripts/test does it), "
                   "or set SAM2KIT_CHROMIUM to a Chromium binary")
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return sync_playwright


class Browser:
    """One Chromium and one page at 1280x720 for a test module; screenshots numbered in order."""

    def __init__(self, name: str):
        self._pw = need_browser()().start()
        self.browser = self._pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.shots = SCREENSHOTS / name
        self.shots.mkdir(parents=True, exist_ok=True)
        for old in self.shots.glob("*.png"):
            old.unlink()
        self._n = 0

    def shot(self, what: str) -> Path:
        self._n += 1
        path = self.shots / f"{self._n:02d}-{what}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self):
        self.context.close()
        self.browser.close()
        self._pw.stop()


# ---- the page ------------------------------------------------------------------------------

def settle(page, timeout: float = 60_000) -> None:
    """Wait until the page has no request, decode or redraw outstanding."""
    page.wait_for_function("window.sam2kit && window.sam2kit.settled()", timeout=timeout, polling=50)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_function("window.sam2kit.settled()", timeout=timeout, polling=50)


def read_canvas(page) -> np.ndarray:
    """What the main canvas shows: HxWx3 uint8, one pixel per pixel of the picture."""
    url = page.evaluate("document.querySelector('[data-testid=canvas]').toDataURL('image/png')")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    rgba = np.asarray(img.convert("RGBA"))
    assert (rgba[..., 3] == 255).all(), "the canvas has transparent pixels: the picture is not drawn"
    return rgba[..., :3].copy()


def bare_canvas(page) -> np.ndarray:
    """The canvas with masks hidden (the page's "Show masks" box), then shown again."""
    box = page.get_by_label("Show masks (M)")
    box.uncheck()
    settle(page)
    bare = read_canvas(page)
    box.check()
    settle(page)
    return bare


def object_colours(page) -> dict[int, tuple[int, int, int]]:
    """Object id -> the colour of its swatch in the object list."""
    items = page.eval_on_selector_all(
        "[data-testid=object-item]",
        "els => els.map(e => [Number(e.dataset.objectId), getComputedStyle(e.querySelector('.swatch')).backgroundColor])")
    return {i: tuple(int(v) for v in re.findall(r"\d+", c)[:3]) for i, c in items}


def expected_canvas(bare: np.ndarray, masks: list[np.ndarray], colours: list) -> np.ndarray:
    """The picture with masks drawn as sam2kit draws overlays (sam2kit.outputs.tint)."""
    from sam2kit.outputs import tint

    return np.asarray(tint(bare, masks, colours))


def assert_drawn(page, bare: np.ndarray, masks: list[np.ndarray], colours: list, what: str, tol: int = 3):
    """The canvas equals ``bare`` with ``masks`` drawn over it (up to compositing rounding)."""
    drawn = read_canvas(page)
    expected = expected_canvas(bare, masks, colours)
    assert drawn.shape == expected.shape, f"{what}: canvas {drawn.shape[:2]} but picture {expected.shape[:2]}"
    diff = np.abs(drawn.astype(int) - expected.astype(int)).max(-1)
    bad = int((diff > tol).sum())
    assert bad == 0, (f"{what}: {bad} of {diff.size} pixels differ from the API's masks drawn "
                      f"(largest difference {diff.max()})")
    return drawn


def point_on_canvas(page, x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    """The page coordinates of picture pixel (x, y) (size: picture (width, height))."""
    b = page.locator("[data-testid=canvas]").bounding_box()
    return b["x"] + x * b["width"] / size[0], b["y"] + y * b["height"] / size[1]


def request_json(response) -> dict:
    return json.loads(response.request.post_data)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
