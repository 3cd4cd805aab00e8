"""Shared fixtures: the reference environment (its outputs cached, tests/reference_cache.py),
checkpoints made by the reference, test images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_cache import ReferenceCache, default_root

HERE = Path(__file__).parent
# kernel choices at their defaults, measured nowhere: tests compare outputs of different
# processes bit for bit (tests/test_tuning.py measures and checks every candidate)
os.environ.setdefault("SAM2KIT_TUNING", "off")
DEFAULT_REFERENCE_PYTHON = Path.home() / ".cache/sam2kit-reference-env/bin/python"

REFERENCE_YAML = {
    "sam2-hiera-tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2-hiera-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-hiera-base-plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2-hiera-large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def _reference_python() -> Path | None:
    p = Path(os.environ.get("SAM2KIT_REFERENCE_PYTHON", DEFAULT_REFERENCE_PYTHON))
    return p if p.is_file() else None


@pytest.fixture(scope="session")
def reference_python() -> Path:
    """The reference environment's python; missing -> skip, or fail under CI=true."""
    p = _reference_python()
    if p is None:
        msg = ("reference environment not found: build it with "
               "`../shared/tools/make-reference-env ~/.cache/sam2kit-reference-env` or set "
               "SAM2KIT_REFERENCE_PYTHON")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def reference(reference_python, tmp_path_factory) -> ReferenceCache:
    """The reference scripts (tests/parity/ref_*.py) run through the cache of their outputs:
    ``reference.run(script, Job(...), In(path), Out(path), ...)`` (see tests/reference_cache.py;
    SAM2KIT_REFERENCE_CACHE=DIR or =off sets where, or keeps nothing between sessions)."""
    root = default_root() or tmp_path_factory.mktemp("reference-outputs")
    cache = ReferenceCache(root, reference_python, HERE / "parity")
    cache.prune()
    return cache


def run_reference(python: Path, script: str, *args) -> None:
    """Run a reference script without the cache (checkpoints: made each session, deterministic)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([str(python), str(HERE / "parity" / script), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=str(HERE))
    if proc.returncode != 0:
        raise RuntimeError(f"reference script {script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def reference_checkpoint(reference_python, tmp_path_factory):
    """factory(name, seed=0, obj_bias=None) -> path of a random checkpoint made by the reference."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("ref_ckpt")

    def make(name: str, seed: int = 0, obj_bias: float | None = None) -> Path:
        key = (name, seed, obj_bias)
        if key not in cache:
            out = root / f"{name}-{seed}-{obj_bias}.pt"
            extra = [] if obj_bias is None else [obj_bias]
            run_reference(reference_python, "ref_make_checkpoint.py", REFERENCE_YAML[name], out, seed, *extra)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """Random tiny weights (test_modes, test_openvino), every tensor perturbed (zero inits such
    as position embeddings too), objects judged present."""
    from sam2kit.build import build_model
    from sam2kit.configs import get_config

    torch.manual_seed(0)
    sd = build_model(get_config("sam2-hiera-tiny")).state_dict()
    gen = torch.Generator().manual_seed(1)
    for v in sd.values():
        if v.is_floating_point():
            v.add_(0.02 * torch.randn(v.shape, generator=gen))
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    path = tmp_path_factory.mktemp("modes") / "tiny.pt"
    torch.save({"model": sd}, path)
    return path


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic HxWx3 uint8 picture: a colour gradient with a few filled ellipses and
    some noise (structure at several scales, like a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), 0.5 + 0.5 * np.sin(xx / 17 + yy / 23)], -1) * 160
    for _ in range(4):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.1, 0.4) * h, rng.uniform(0.1, 0.4) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


sys.path.insert(0, str(HERE))


@pytest.fixture
def hub_standin(tmp_path, monkeypatch):
    """A local stand-in for the Hugging Face hub (tests/hub_standin.py), with huggingface_hub
    pointed at it and at an empty cache of this test's own. Yields the HubStandin: ``.add(repo_id,
    filename, data, revision="main")``, ``.url``, ``.requests`` (a list of (method, path)),
    ``.cache_dir`` (the hub cache)."""
    from hub_standin import HubStandin, point_huggingface_hub_at

    with HubStandin() as hub:
        hub.cache_dir = point_huggingface_hub_at(hub.url, tmp_path / "hf-home", monkeypatch)
        yield hub
