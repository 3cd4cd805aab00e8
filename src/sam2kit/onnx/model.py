"""An exported model folder opened with ONNX Runtime (no PyTorch): the manifest, the checksums,
one inference session per graph (created when first used), and the model's steps on NumPy
arrays, mirroring ``SAM2Model``'s methods."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2kit.onnx import arrays

GRAPHS = ("image_encoder", "prompt_decoder", "memory_attention", "memory_encoder")


class OnnxModelError(ValueError):
    """An export folder that cannot be used; the message names the problem and the fix."""


@dataclass
class Features:
    """One image's encoder outputs (see ``sam2kit.onnx.graphs.ImageEncoderGraph``)."""

    image_embed: np.ndarray
    high_res: tuple[np.ndarray, np.ndarray]
    vision_features: np.ndarray
    vision_pos: np.ndarray


@dataclass
class Head:
    """What the heads give for one object (as ``sam2kit.modeling.sam2.HeadOutput``)."""

    low_res_masks: np.ndarray  # [B, 1, S/4, S/4]
    high_res_masks: np.ndarray  # [B, 1, S, S]
    ious: np.ndarray
    obj_ptr: np.ndarray  # [B, 256]
    object_score_logits: np.ndarray  # [B, 1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxSAM2:
    """folder: what ``sam2kit export`` wrote; providers: ONNX Runtime execution providers
    (None: CPU); verify: check each file's SHA-256 against the manifest when first opened."""

    def __init__(self, folder: str | Path, providers: list | None = None, verify: bool = True):
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError("the ONNX runtime needs onnxruntime: pip install 'sam2kit[onnx]'") from e
        self._ort = onnxruntime
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise OnnxModelError(f"{self.folder} has no manifest.json: give the folder written by "
                                 "`sam2kit export --model ID -o DIR`")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != "sam2kit-onnx":
            raise OnnxModelError(f"{path} is not a sam2kit ONNX manifest; export the model again")
        missing = [g for g in GRAPHS if not (self.folder / f"{g}.onnx").is_file()]
        if missing:
            raise OnnxModelError(f"{self.folder} lacks {', '.join(m + '.onnx' for m in missing)}; "
                                 "export the model again")
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.verify = verify
        self._sessions: dict = {}
        m = self.manifest["model"]
        self.config = m
        self.image_size = int(self.manifest["resolution"])
        pre = self.manifest["preprocessing"]
        self.mean, self.std = pre["mean"], pre["std"]
        track = self.manifest["tracking"]
        self.no_obj_score = float(track["no_obj_score"])
        self._mask_w = np.asarray(track["mask_downsample_weight"], np.float32)
        self._mask_b = float(track["mask_downsample_bias"])
        self._no_obj_ptr = np.asarray(track["no_obj_ptr"], np.float32).reshape(1, -1)

    def session(self, name: str):
        if name not in self._sessions:
            path = self.folder / f"{name}.onnx"
            if self.verify:
                want = self.manifest["files"][name]["sha256"]
                if _sha256(path) != want:
                    raise OnnxModelError(f"{path} does not match the checksum in manifest.json (changed "
                                         "or truncated); export the model again")
            opts = self._ort.SessionOptions()
            opts.log_severity_level = 3  # errors only: not ONNX Runtime's notes on merged shape information
            self._sessions[name] = self._ort.InferenceSession(str(path), opts, providers=self.providers)
        return self._sessions[name]

    def _run(self, name: str, **inputs) -> list[np.ndarray]:
        """Run one graph on the inputs it takes (a graph leaves out an input its model does not
        read: SAM 2.0's memory attention has no obj_ptr_offsets)."""
        sess = self.session(name)
        return sess.run(None, {i.name: inputs[i.name] for i in sess.get_inputs()})

    # ---- the model's steps ------------------------------------------------------------------

    def encode(self, image: np.ndarray) -> Features:
        """image: [1, 3, S, S] float32, normalised."""
        embed, hr0, hr1, vf, vp = self._run("image_encoder", image=image)
        return Features(embed, (hr0, hr1), vf, vp)

    def decode(self, image_embed, high_res, coords: np.ndarray, labels: np.ndarray,
               mask_input: np.ndarray | None) -> list[np.ndarray]:
        """coords [B, N, 2] float32 in model-input pixels (the padding point included), labels
        [B, N] int32, mask_input [B, 1, 4h, 4w] or None. Returns the prompt decoder's outputs
        (masks, iou_predictions, single_mask, single_iou, obj_ptr, object_score_logits)."""
        b = coords.shape[0]
        s4 = self.image_size // 4
        has = np.ones(1, np.float32) if mask_input is not None else np.zeros(1, np.float32)
        if mask_input is None:
            mask_input = np.zeros((b, 1, s4, s4), np.float32)
        return self._run("prompt_decoder", image_embed=image_embed, high_res_feats_0=high_res[0],
                         high_res_feats_1=high_res[1], point_coords=coords.astype(np.float32),
                         point_labels=labels.astype(np.int32), mask_input=mask_input.astype(np.float32),
                         has_mask_input=has)

    def condition_on_memory(self, f: Features, memories: list[tuple[int, np.ndarray]],
                            memory_pos: np.ndarray | None, ptrs: list[tuple[int, np.ndarray]],
                            max_obj_ptrs: int) -> np.ndarray:
        """As ``SAM2Model.condition_on_memory``: memories [(slot, [1, 64, h, w])], pointers
        [(temporal offset, [1, 256])]; neither: the image embedding."""
        if not memories and not ptrs:
            return f.image_embed
        from sam2kit.video.tracking import pointer_offset_scale

        c, mem = f.vision_features.shape[1], 64
        h = f.vision_features.shape[-1]
        t_max = np.float32(pointer_offset_scale(max_obj_ptrs))
        if not memories:  # pointers alone: a state the torch predictor reaches only after odd edits
            raise NotImplementedError("memory_attention.onnx needs at least one memory frame (M >= 1): "
                                      "an object with object pointers but no memory frame near this "
                                      "frame; prompt the object on this frame first")
        memory = np.concatenate([m for _, m in memories])
        pos = memory_pos if memory_pos is not None else np.zeros((1, mem, h, h), np.float32)
        return self._run(
            "memory_attention", vision_features=f.vision_features, vision_pos=f.vision_pos,
            memory=memory.astype(np.float32), memory_pos=pos,
            memory_slots=np.asarray([t for t, _ in memories], np.int64),
            obj_ptrs=(np.concatenate([p for _, p in ptrs]) if ptrs else np.zeros((0, c), np.float32)),
            obj_ptr_offsets=np.asarray([np.float32(o) / t_max for o, _ in ptrs], np.float32))[0]

    def sam_heads(self, pix_feat, high_res, points, mask_inputs, multimask: bool,
                  dynamic_multimask: bool = True) -> Head:
        """As ``SAM2Model.sam_heads`` for one object: points ([1, N, 2], [1, N]) or None,
        mask_inputs [1, 1, 4h, 4w] logits or None."""
        if points is None:
            points = (np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.int32))
        coords, labels = _with_padding(*points)
        masks, iou, single, single_iou, ptr, score = self.decode(pix_feat, high_res, coords, labels, mask_inputs)
        appearing = score > 0  # [B, 1]
        masks = np.where(appearing[:, :, None, None], masks, np.float32(self.no_obj_score))
        single = np.where(appearing[:, :, None, None], single, np.float32(self.no_obj_score))
        rows = np.arange(masks.shape[0])
        if multimask:
            best = 1 + np.argmax(iou[:, 1:], axis=-1)
            low, token_ptr, ious = masks[rows, best][:, None], ptr[rows, best], iou[:, 1:]
        elif dynamic_multimask:
            low, token_ptr, ious = single, ptr[:, 0], single_iou
        else:
            low, token_ptr, ious = masks[:, 0:1], ptr[:, 0], iou[:, 0:1]
        high = arrays.resize(low, (self.image_size, self.image_size))
        return Head(low.astype(np.float32), high, ious, token_ptr, score)

    def mask_as_output(self, f: Features, mask: np.ndarray) -> Head:
        """As ``SAM2Model.mask_as_output``: a binary mask [1, 1, S, S] taken as the output."""
        mask = mask.astype(np.float32)
        high = mask * np.float32(20.0) - np.float32(10.0)
        low = arrays.resize(high, (high.shape[-2] // 4, high.shape[-1] // 4), antialias=True)
        ptr = self.sam_heads(f.vision_features, f.high_res, None,
                             arrays.mask_downsample(mask, self._mask_w, self._mask_b), False).obj_ptr
        appearing = np.any(mask.reshape(mask.shape[0], -1) > 0, axis=1, keepdims=True).astype(np.float32)
        obj_ptr = appearing * ptr + (1 - appearing) * self._no_obj_ptr
        return Head(low, high, np.ones((mask.shape[0], 1), np.float32), obj_ptr.astype(np.float32),
                    (np.float32(20.0) * appearing - np.float32(10.0)).astype(np.float32))

    def encode_memory(self, f: Features, high_res_masks, object_score_logits, binarize: bool):
        """As ``SAM2Model.encode_memory``: (features [B, 64, h, w], position [B, 64, h, w])."""
        feats, pos = self._run("memory_encoder", vision_features=f.vision_features,
                               masks=high_res_masks.astype(np.float32),
                               object_score_logits=object_score_logits.astype(np.float32),
                               binarize=np.array(bool(binarize)))
        return feats, pos


def _with_padding(coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append the padding point the prompt encoder appends to point prompts."""
    b = coords.shape[0]
    return (np.concatenate([coords, np.zeros((b, 1, 2), np.float32)], 1).astype(np.float32),
            np.concatenate([labels, -np.ones((b, 1), np.int32)], 1).astype(np.int32))
