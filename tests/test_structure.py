"""The package's shape: the public names import from where they always did, the old module paths
still work (with a deprecation warning), ``import sam2kit`` loads no PyTorch, and the layer
contracts of pyproject.toml hold (import-linter: layers one way down, no front end imported by
the library, no import circles)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sam2kit

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_imports_from_sam2kit():
    for name in sam2kit.__all__:
        assert getattr(sam2kit, name) is not None, name
    from sam2kit import SAM2ImagePredictor, SAM2VideoPredictor
    from sam2kit.image.predictor import SAM2ImagePredictor as image_predictor
    from sam2kit.video.predictor import SAM2VideoPredictor as video_predictor
    assert SAM2ImagePredictor is image_predictor and SAM2VideoPredictor is video_predictor
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        sam2kit.nothing_here  # noqa: B018


@pytest.mark.parametrize("old, new, names", [
    ("sam2kit.predictor", "sam2kit.image.predictor", ["SAM2ImagePredictor"]),
    ("sam2kit.video_predictor", "sam2kit.video.predictor", ["SAM2VideoPredictor", "build_sam2_video_predictor"]),
    ("sam2kit.automatic", "sam2kit.image.automatic", ["SAM2AutomaticMaskGenerator", "coco_annotations"]),
])
def test_old_module_paths_reexport_with_a_deprecation_warning(old, new, names):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and old in str(w.message) and new in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    moved = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(moved, name)


def test_import_sam2kit_loads_no_torch():
    code = ("import sys, sam2kit, sam2kit.errors, sam2kit.video.io; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_layer_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install 'sam2kit[test]')")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout
