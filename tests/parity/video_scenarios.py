"""Video parity scenarios, shared by the reference runner (ref_video.py, run in the reference
environment) and the sam2kit test. Each step calls the same-named predictor method; the
runner records what it returns: masks (as bits) and every object's object-score logits on
every frame it has a result for.
"""

import numpy as np


def run_steps(predictor, state, steps, obj_scores):
    """Run ``steps`` with a reference-compatible predictor. ``obj_scores(state)`` returns
    {obj_id: {frame_idx: float}}. Returns a list with one record per step."""
    records = []
    for step in steps:
        op = step["op"]
        if op == "points":
            out = predictor.add_new_points_or_box(state, step["frame"], step["obj"], points=step.get("points"),
                                                  labels=step.get("labels"), box=step.get("box"),
                                                  clear_old_points=step.get("clear", True))
            records.append({"frames": {out[0]: _bits(out[2])}, "obj_ids": list(out[1])})
        elif op == "mask":
            out = predictor.add_new_mask(state, step["frame"], step["obj"], step["mask"])
            records.append({"frames": {out[0]: _bits(out[2])}, "obj_ids": list(out[1])})
        elif op == "propagate":
            frames, obj_ids = {}, None
            for f, ids, masks in predictor.propagate_in_video(state, start_frame_idx=step.get("start"),
                                                              max_frame_num_to_track=step.get("max"),
                                                              reverse=step.get("reverse", False)):
                frames[f] = _bits(masks)
                obj_ids = list(ids)
            records.append({"frames": frames, "obj_ids": obj_ids})
        elif op == "clear":
            out = predictor.clear_all_prompts_in_frame(state, step["frame"], step["obj"])
            records.append({"frames": {out[0]: _bits(out[2])}, "obj_ids": list(out[1])})
        elif op == "remove":
            ids, updated = predictor.remove_object(state, step["obj"])
            records.append({"frames": {f: _bits(m) for f, m in updated}, "obj_ids": list(ids)})
        else:
            raise ValueError(op)
        records[-1]["scores"] = obj_scores(state)
    return records


def _bits(masks):
    m = masks > 0.0
    m = m.cpu().numpy() if hasattr(m, "cpu") else np.asarray(m)  # torch tensors or NumPy arrays (ONNX runtime)
    return {"shape": m.shape, "bits": np.packbits(m.reshape(-1))}


def unbits(rec):
    n = int(np.prod(rec["shape"]))
    return np.unpackbits(rec["bits"])[:n].reshape(rec["shape"]).astype(bool)


def main_scenario(h, w, num_frames):
    """Two objects (clicks on frame 0, a box on frame 3), forward propagation, a correction
    click on a later frame, propagation again, reverse propagation from a middle frame, a new
    object added after propagation (prompted on a later frame than where the next propagation
    starts), propagation again."""
    p = lambda fx, fy: [fx * w, fy * h]  # noqa: E731
    mid = num_frames // 2
    return [
        dict(op="points", frame=0, obj=1, points=[p(0.45, 0.5), p(0.55, 0.45)], labels=[1, 1]),
        dict(op="points", frame=3, obj=2, box=p(0.1, 0.2) + p(0.4, 0.8)),
        dict(op="propagate"),
        dict(op="points", frame=num_frames - 3, obj=1, points=[p(0.2, 0.3)], labels=[0], clear=False),
        dict(op="propagate"),
        dict(op="propagate", start=mid, reverse=True),
        dict(op="points", frame=mid - 1, obj=7, points=[p(0.7, 0.6)], labels=[1]),
        dict(op="propagate"),
    ]


def editing_scenario(h, w, num_frames):
    """A mask prompt, an object prompted on two frames, clearing one frame's prompts,
    removing an object, reverse propagation over part of the video."""
    p = lambda fx, fy: [fx * w, fy * h]  # noqa: E731
    mask = np.zeros((h, w), bool)
    mask[int(0.3 * h): int(0.7 * h), int(0.5 * w): int(0.9 * w)] = True
    return [
        dict(op="points", frame=1, obj=1, points=[p(0.3, 0.5)], labels=[1]),
        dict(op="mask", frame=2, obj=2, mask=mask),
        dict(op="points", frame=4, obj=3, points=[p(0.6, 0.3), p(0.5, 0.6)], labels=[1, 0]),
        dict(op="points", frame=6, obj=3, points=[p(0.62, 0.32)], labels=[1]),
        dict(op="propagate", max=num_frames - 3),
        dict(op="clear", frame=4, obj=3),
        dict(op="remove", obj=2),
        dict(op="propagate", start=num_frames - 2, reverse=True, max=5),
    ]


SCENARIOS = {"main": main_scenario, "editing": editing_scenario}
