"""Runs in the reference environment: the reference predictor (sam2==1.1.0) driven over dataset
folders the way Meta's tools/vos_inference.py drives it (read there, written here: that script
is not part of the sam2 package), its predictor built as the script's main() builds it
(apply_postprocessing off, as for the published evaluations), on the CPU.

Two of the script's modes: "per_obj" (--per_obj_png_file: SA-V's per-object PNGs, every object
prompted with its mask on the first frame, one session) and "later"
(--track_object_appearing_later_in_video: palette PNGs, each object tracked alone from the first
frame where it is annotated, the per-object logits put together per frame under the
non-overlap constraint).

usage: python ref_vos.py JOBS.json
JOBS: [{"config", "checkpoint", "image_size", "base_video_dir", "input_mask_dir",
        "output_mask_dir", "mode"}]
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from sam2.build_sam import build_sam2_video_predictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_patches import patch_for_cpu  # noqa: E402


def frame_names(video_dir):
    names = [os.path.splitext(p)[0] for p in os.listdir(video_dir)
             if os.path.splitext(p)[1].lower() in (".jpg", ".jpeg")]
    return sorted(names, key=int)


def per_object_masks(job, video, name):
    """{object id: HxW bool} annotated on frame ``name`` (missing files: no objects)."""
    root = os.path.join(job["input_mask_dir"], video)
    if job["mode"] == "per_obj":
        out = {}
        for obj in os.listdir(root):
            path = os.path.join(root, obj, f"{name}.png")
            if os.path.exists(path):
                out[int(obj)] = np.array(Image.open(path)) > 0
        return out
    path = os.path.join(root, f"{name}.png")
    if not os.path.exists(path):
        return {}
    labels = np.array(Image.open(path)).astype(np.uint8)
    return {int(k): labels == k for k in np.unique(labels) if k > 0}


def save(job, video, name, masks, height, width, palette):
    """Palette PNG (lower ids painted last, so they win overlaps), or one 0/1 PNG per object."""
    folder = os.path.join(job["output_mask_dir"], video)
    os.makedirs(folder, exist_ok=True)
    if job["mode"] != "per_obj":
        labels = np.zeros((height, width), np.uint8)
        for obj in sorted(masks, reverse=True):
            labels[masks[obj].reshape(height, width)] = obj
        img = Image.fromarray(labels)
        img.putpalette(palette)
        img.save(os.path.join(folder, f"{name}.png"))
        return
    for obj, m in masks.items():
        os.makedirs(os.path.join(folder, f"{obj:03d}"), exist_ok=True)
        img = Image.fromarray(m.reshape(height, width).astype(np.uint8))
        img.putpalette(palette)
        img.save(os.path.join(folder, f"{obj:03d}", f"{name}.png"))


def palette_of(job, video, name):
    root = os.path.join(job["input_mask_dir"], video)
    path = os.path.join(root, f"{name}.png")
    if job["mode"] == "per_obj":
        obj = sorted(os.listdir(root))[0]
        path = os.path.join(root, obj, f"{name}.png")
    return Image.open(path).getpalette()


@torch.inference_mode()
def all_objects_from_first_frame(predictor, job, video):
    names = frame_names(os.path.join(job["base_video_dir"], video))
    state = predictor.init_state(video_path=os.path.join(job["base_video_dir"], video))
    h, w = state["video_height"], state["video_width"]
    for obj, mask in per_object_masks(job, video, names[0]).items():
        predictor.add_new_mask(inference_state=state, frame_idx=0, obj_id=obj, mask=mask)
    palette = palette_of(job, video, names[0])
    for f, ids, logits in predictor.propagate_in_video(state):
        save(job, video, names[f], {o: (logits[i] > 0).cpu().numpy() for i, o in enumerate(ids)}, h, w, palette)


@torch.inference_mode()
def each_object_from_its_first_mask(predictor, job, video):
    names = frame_names(os.path.join(job["base_video_dir"], video))
    state = predictor.init_state(video_path=os.path.join(job["base_video_dir"], video))
    h, w = state["video_height"], state["video_width"]
    first = {}  # object id -> (frame index, mask): the first non-empty annotation
    palette = None
    for idx, name in enumerate(names):
        masks = per_object_masks(job, video, name)
        if masks and palette is None:
            palette = palette_of(job, video, name)
        for obj, m in masks.items():
            if m.any() and obj not in first:
                first[obj] = (idx, m)
    objects = sorted(first)
    scores = {obj: {} for obj in objects}
    for obj in objects:
        predictor.reset_state(state)
        idx, m = first[obj]
        predictor.add_new_mask(inference_state=state, frame_idx=idx, obj_id=obj, mask=m)
        for f, _, logits in predictor.propagate_in_video(state, start_frame_idx=idx, reverse=False):
            scores[obj][f] = logits.cpu()
    for f, name in enumerate(names):
        frame = torch.full((len(objects), 1, h, w), -1024.0)
        for i, obj in enumerate(objects):
            if f in scores[obj]:
                frame[i] = scores[obj][f]
        frame = predictor._apply_non_overlapping_constraints(frame)
        save(job, video, name, {o: (frame[i] > 0).numpy() for i, o in enumerate(objects)}, h, w, palette)


for job in json.load(open(sys.argv[1])):
    per_obj = job["mode"] == "per_obj"
    overrides = ["++model.non_overlap_masks=" + ("false" if per_obj else "true")]  # as the script's main()
    if job["image_size"] != 1024:
        overrides.append(f"++model.image_size={job['image_size']}")
    predictor = build_sam2_video_predictor(config_file=job["config"], ckpt_path=job["checkpoint"],
                                           apply_postprocessing=False, hydra_overrides_extra=overrides,
                                           device="cpu")
    patch_for_cpu(predictor)
    run = all_objects_from_first_frame if per_obj else each_object_from_its_first_mask
    for video in sorted(os.listdir(job["base_video_dir"])):
        run(predictor, job, video)
