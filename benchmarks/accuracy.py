"""How far each opt-in speed mode moves the results from the default fp32 path.

On the parity cases (the image cases of tests/test_parity_image.py and the video "main"
scenario of tests/test_parity_video.py on 12 frames of the bundled clip), sam2kit in each
mode is compared with sam2kit fp32 at 1024, which matches the reference to float precision.
Figures: mask IoU (mean and lowest, per candidate mask / per frame and object) and the
largest score difference (predicted IoU for images, object-score logit for video).
Weights are random (tiny, object-score bias raised for video): masks are blob-like, so the
figures tell how much a mode perturbs the computation, not how it affects a trained model.

    python benchmarks/accuracy.py                       # bf16, int8, compile, 512
    python benchmarks/accuracy.py --modes bf16 --json out/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from speed import MODES, make_inputs  # noqa: E402


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def image_results(ckpt: str, mode: dict) -> dict:
    from test_parity_image import _cases, _ours

    from sam2kit import SAM2ImagePredictor

    with torch.inference_mode():
        return _ours(SAM2ImagePredictor.from_pretrained(ckpt, **mode), _cases())


def video_results(ckpt: str, frames_dir: str, mode: dict) -> list:
    from parity.video_scenarios import SCENARIOS, run_steps
    from test_parity_video import ours_scores

    from sam2kit import SAM2VideoPredictor

    predictor = SAM2VideoPredictor.from_pretrained(ckpt, **mode)
    state = predictor.init_state(frames_dir)
    steps = SCENARIOS["main"](state.video_height, state.video_width, state.num_frames)
    records = run_steps(predictor, state, steps, ours_scores)
    state.close()
    return records


def compare_images(base: dict, other: dict) -> dict:
    ious, score_diff = [], 0.0
    for name, (masks, scores, _) in base.items():
        m2, s2, _ = other[name]
        if isinstance(masks, list):  # a batch of images: one array per image
            pairs = list(zip(masks, m2, scores, s2))
        else:
            pairs = [(masks, m2, scores, s2)]
        for ma, mb, sa, sb in pairs:
            a, b = ma.reshape(-1, *ma.shape[-2:]) > 0, mb.reshape(-1, *mb.shape[-2:]) > 0
            ious += [iou(x, y) for x, y in zip(a, b)]
            score_diff = max(score_diff, float(np.abs(sa - sb).max()))
    return {"masks": len(ious), "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
            "max_score_diff": score_diff}


def compare_video(base: list, other: list) -> dict:
    from parity.video_scenarios import unbits

    ious, score_diff = [], 0.0
    for r, o in zip(base, other):
        for f, bits in r["frames"].items():
            a, b = unbits(bits), unbits(o["frames"][f])
            ious += [iou(a[k], b[k]) for k in range(a.shape[0])]
        for obj_id, per_frame in r["scores"].items():
            for f, v in per_frame.items():
                score_diff = max(score_diff, abs(o["scores"][obj_id][f] - v))
    return {"masks": len(ious), "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
            "max_score_diff": score_diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["bf16", "int8", "compile", "512"],
                    choices=[m for m in MODES if m != "fp32"])
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    from test_parity_video import NUM_FRAMES, sample_frames
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="sam2kit-accuracy-") as tmp:
        work = Path(tmp)
        ckpt = make_inputs(work, 1)["checkpoint"]
        frames = work / "clip"
        frames.mkdir()
        for i, f in enumerate(sample_frames(NUM_FRAMES)):
            Image.fromarray(f).save(frames / f"{i:05d}.jpg", quality=95)
        base_img, base_vid = image_results(ckpt, {}), video_results(ckpt, str(frames), {})
        figures = {}
        for mode in args.modes:
            figures[mode] = {"image": compare_images(base_img, image_results(ckpt, MODES[mode])),
                             "video": compare_video(base_vid, video_results(ckpt, str(frames), MODES[mode]))}
            print(f"{mode}: " + json.dumps(figures[mode]), flush=True)
    print("\n| mode | image masks: mean IoU | min IoU | max score diff | video masks: mean IoU | min IoU "
          "| max object-score diff |")
    print("|---|---|---|---|---|---|---|")
    for mode, f in figures.items():
        i, v = f["image"], f["video"]
        print(f"| {mode} | {i['mean_iou']:.4f} | {i['min_iou']:.4f} | {i['max_score_diff']:.4f} | "
              f"{v['mean_iou']:.4f} | {v['min_iou']:.4f} | {v['max_score_diff']:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
