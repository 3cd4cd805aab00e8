"""Make the README's pictures of the page from the browser tests' screenshots (run the tests
first: bash scripts/test tests/test_page_picture.py tests/test_page_video.py). Each is scaled to
WIDTH pixels and reduced to a palette, to stay a few tens of KB.

usage: python scripts/page_screenshots.py [OUT_DIR]   (default: docs/)
"""

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "out" / "page-tests"
WIDTH, COLOURS = 640, 32
PICK = {  # README picture <- the test's screenshot
    "page-picture.png": "picture/*-two-objects.png",
    "page-everything.png": "picture/*-everything-hover.png",
    "page-video.png": "video/*-tracking.png",
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, pattern in PICK.items():
        found = sorted(SHOTS.glob(pattern))
        if not found:
            sys.exit(f"no {pattern} under {SHOTS}: run the page's browser tests first")
        img = Image.open(found[-1]).convert("RGB")
        img = img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.LANCZOS)
        img = img.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        img.save(out / name, optimize=True)
        print(f"{out / name}: {(out / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")
