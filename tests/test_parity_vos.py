"""`sam2kit vos` against the reference predictor (sam2==1.1.0) driven the way Meta's
tools/vos_inference.py drives it (tests/parity/ref_vos.py, written from it), the same random weights and
fixture datasets in both: DAVIS layout with objects first annotated on later frames (the
script's --track_object_appearing_later_in_video) and SA-V layout (--per_obj_png_file).
Required, as for the other video parity tests: per frame and object at least 99.5% of the
pixels equal; most masks non-empty."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE_YAML
from reference_cache import In, Job, Out
from sam2kit.cli import main
from vos_fixtures import make_davis, make_sav, shapes_video

pytestmark = pytest.mark.parity
SIZE = 256


def agreement(ours: np.ndarray, ref: np.ndarray, ids) -> list[tuple[float, bool]]:
    return [(float(((ours == k) == (ref == k)).mean()), bool((ref == k).any())) for k in ids]


def test_vos_matches_the_official_script(reference, reference_checkpoint, tmp_path):
    ckpt = reference_checkpoint("sam2-hiera-tiny", seed=1, obj_bias=8.0)
    make_davis(tmp_path / "DAVIS", {"seq": shapes_video(6, 96, 128, seed=40, objects=3, void=False)})
    make_sav(tmp_path / "SAV", {"vid": shapes_video(4, 96, 128, seed=41, void=False, appear=0)}, step=2)
    common = dict(config=REFERENCE_YAML["sam2-hiera-tiny"], checkpoint=In(ckpt), image_size=SIZE)
    jobs = [dict(common, base_video_dir=In(tmp_path / "DAVIS/JPEGImages/480p"), mode="later",
                 input_mask_dir=In(tmp_path / "DAVIS/Annotations/480p"), output_mask_dir=Out(tmp_path / "ref_davis")),
            dict(common, base_video_dir=In(tmp_path / "SAV/JPEGImages_24fps"), mode="per_obj",
                 input_mask_dir=In(tmp_path / "SAV/Annotations_6fps"), output_mask_dir=Out(tmp_path / "ref_sav"))]
    reference.run("ref_vos.py", Job(jobs, "json"))
    for name in ("DAVIS", "SAV"):
        rc = main(["vos", str(tmp_path / name), "-o", str(tmp_path / f"ours_{name.lower()}"), "--model", str(ckpt),
                   "--resolution", str(SIZE), "-q"])
        assert rc == 0
    results = []
    for f in sorted(os.listdir(tmp_path / "ref_davis/seq")):
        ref = np.asarray(Image.open(tmp_path / "ref_davis/seq" / f))
        ours = np.asarray(Image.open(tmp_path / "ours_davis/seq" / f))
        results += agreement(ours, ref, (1, 2, 3))
    for obj in sorted(os.listdir(tmp_path / "ref_sav/vid")):
        for f in sorted(os.listdir(tmp_path / "ref_sav/vid" / obj)):
            ref = np.asarray(Image.open(tmp_path / "ref_sav/vid" / obj / f))
            ours = np.asarray(Image.open(tmp_path / "ours_sav/vid" / obj / f))
            results += agreement(ours, ref, (1,))
    worst = min(a for a, _ in results)
    present = sum(p for _, p in results)
    print(f"\nPARITY vos: {len(results)} frame-object masks against the reference as tools/vos_inference.py runs it, min agreement "
          f"{worst:.6f}, non-empty {present}/{len(results)}")
    assert len(results) == 6 * 3 + 4 * 7 and worst >= 0.995
    assert present > len(results) // 2
