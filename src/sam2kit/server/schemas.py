"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema).

Coordinates are pixels of the original picture or frame: x to the right, y down. Masks travel
as COCO compressed RLE: ``{"size": [H, W], "counts": "..."}``, column-major, as pycocotools
and ``sam2kit.image.amg.rle_to_mask`` read it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float]


def _finite(values, what: str):
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{what} must be finite numbers (no NaN or infinity)")
    return values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RLE(Strict):
    size: tuple[int, int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE string (column-major)")


class Health(BaseModel):
    status: str
    model: str
    device: str
    image_size: int
    precision: str
    backend: str = Field("torch", description="the image encoder's runtime: torch or openvino")
    sessions: int
    images: int
    queue: int = Field(description="model jobs running or waiting now")
    limits: dict = Field(description="the server's settings in force (the token never shown)")


class Error(BaseModel):
    error: str = Field(description="what is wrong, and how to fix it")


class OpenRequest(Strict):
    """Open something on the server instead of uploading it."""
    path: str | None = Field(None, description="a file or frame folder relative to the media root")
    sample: Literal["photo", "video"] | None = Field(None, description="a bundled sample")

    @model_validator(mode="after")
    def _one(self):
        if (self.path is None) == (self.sample is None):
            raise ValueError("give exactly one of path (relative to the media root) or sample")
        return self


class ImageInfo(BaseModel):
    image_id: str
    width: int
    height: int
    cached: bool = Field(description="the embedding was already computed (same picture seen before)")


class Clicks(Strict):
    """Points with their labels and/or a box, in pixels of the picture or frame."""
    points: list[Point] = Field(default_factory=list, description="clicks, [[x, y], ...] in pixels")
    labels: list[Literal[0, 1]] = Field(default_factory=list, description="1 foreground, 0 background")
    box: tuple[float, float, float, float] | None = Field(None, description="[x0, y0, x1, y1] in pixels")

    @field_validator("points")
    @classmethod
    def _points(cls, v):
        return [_finite(p, "point coordinates") for p in v]

    @field_validator("box")
    @classmethod
    def _box(cls, v):
        return None if v is None else _finite(v, "box coordinates")

    def _check_clicks(self, other: str | None, what: str) -> None:
        if len(self.points) != len(self.labels):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels: give one label per point")
        if len(self.points) > 256:
            raise ValueError("at most 256 points in one prompt")
        if not self.points and self.box is None and other is None:
            raise ValueError(f"give points (with labels), a box, or {what}")


class PredictRequest(Clicks):
    mask_input: str | None = Field(None, description="a logits_id from an earlier response on this image")
    multimask: bool = Field(True, description="three candidates (true) or one")

    @model_validator(mode="after")
    def _pairs(self):
        self._check_clicks(self.mask_input, "a mask_input")
        return self


class Mask(BaseModel):
    rle: RLE
    score: float
    area: int
    bbox: tuple[int, int, int, int] | None = Field(description="[x, y, w, h], null when empty")
    logits_id: str = Field(description="pass as mask_input to refine this mask")


class PredictResponse(BaseModel):
    masks: list[Mask]
    best: int = Field(description="index of the highest-scored mask")
    logits_id: str = Field(description="the best mask's logits_id")


class AutomaticRequest(Strict):
    points_per_side: int = Field(32, ge=1, le=64)
    points_per_batch: int = Field(64, ge=1, le=256)
    pred_iou_thresh: float = Field(0.8, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_n_layers: int = Field(0, ge=0, le=2)
    min_mask_region_area: int = Field(0, ge=0, le=10_000)
    use_m2m: bool = False


class VideoInfo(BaseModel):
    session_id: str
    num_frames: int
    width: int
    height: int
    fps: float | None


class VideoState(VideoInfo):
    objects: list[int]
    tracked_frames: int = Field(description="frames with a result")
    propagating: bool


class PromptRequest(Clicks):
    frame: int = Field(ge=0)
    object: int = Field(ge=0, le=2**31 - 1)
    mask: RLE | None = Field(None, description="a mask prompt instead of points/box (the frame's size)")
    clear_old: bool = Field(True, description="replace this object's earlier points on this frame")

    @model_validator(mode="after")
    def _kinds(self):
        if self.mask is not None and (self.points or self.box is not None):
            raise ValueError("a mask prompt goes alone: leave out points and box")
        self._check_clicks(self.mask, "a mask")
        return self


class ObjectMask(BaseModel):
    object: int
    rle: RLE
    object_score: float | None = Field(description="object-score logit (> 0: visible); null: no result")


class FrameResult(BaseModel):
    frame: int
    objects: list[ObjectMask]


class PropagateRequest(Strict):
    start_frame: int | None = Field(None, ge=0, description="default: the first prompted frame "
                                                            "(the last with reverse)")
    reverse: bool = False
    max_frames: int | None = Field(None, ge=1, description="frames to track, the start included")


class Done(BaseModel):
    ok: bool = True
