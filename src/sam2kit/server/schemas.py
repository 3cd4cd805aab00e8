"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema).

Coordinates are pixels of the original picture or frame: x to the right, y down. Masks travel
as COCO compressed RLE: ``{"size": [H, W], "counts": "..."}``, column-major, as pycocotools
and ``sam2kit.image.amg.rle_to_mask`` read it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator,
                      model_validator)

Point = tuple[StrictFloat, StrictFloat]


def _finite(values, what: str):
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{what} must be finite numbers (no NaN or infinity)")
    return values


class Strict(BaseModel):
    """A request body: unknown fields refused; booleans are StrictBool (0, 1 or "yes" are not
    booleans), numbers StrictInt and StrictFloat (false is not 0, "5" is not 5): Schemathesis found
    them accepted in lax mode."""

    model_config = ConfigDict(extra="forbid")


class RLE(Strict):
    size: tuple[StrictInt, StrictInt] = Field(description="[height, width]")
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


ERROR_STATUSES = {400: "bad request (the message says what to fix)",
                  401: "a token is needed (--token)", 404: "no such session, picture, frame or file",
                  405: "method not allowed (the Allow header lists those that are)",
                  409: "the session is busy tracking, or not ready for this",
                  413: "too large (--max-upload-mb, --max-pixels)", 415: "not a picture or video this server reads",
                  422: "the request is well formed but cannot be used (e.g. a point outside the picture)",
                  503: "busy (full queue): retry after Retry-After seconds",
                  507: "the disk budget for results is spent (--spill-limit-gb)"}


def error_responses() -> dict:
    """Every error a route may answer, documented for the OpenAPI schema: ``{"error": str}``."""
    return {status: {"model": Error, "description": text} for status, text in ERROR_STATUSES.items()}


def open_body(what: str) -> dict:
    """The OpenAPI ``requestBody`` of the routes that open a file (read by hand: either form)."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": f"the {what}"}}}},
        "application/json": {"schema": OpenRequest.model_json_schema()}}}}


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
    box: tuple[StrictFloat, StrictFloat, StrictFloat, StrictFloat] | None = Field(
        None, description="[x0, y0, x1, y1] in pixels")

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
    multimask: StrictBool = Field(True, description="three candidates (true) or one")

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
    points_per_side: StrictInt = Field(32, ge=1, le=64)
    points_per_batch: StrictInt = Field(64, ge=1, le=256)
    pred_iou_thresh: StrictFloat = Field(0.8, ge=0, le=1)
    stability_score_thresh: StrictFloat = Field(0.95, ge=0, le=1)
    box_nms_thresh: StrictFloat = Field(0.7, ge=0, le=1)
    crop_n_layers: StrictInt = Field(0, ge=0, le=2)
    min_mask_region_area: StrictInt = Field(0, ge=0, le=10_000)
    use_m2m: StrictBool = False


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
    frame: StrictInt = Field(ge=0)
    object: StrictInt = Field(ge=0, le=2**31 - 1)
    mask: RLE | None = Field(None, description="a mask prompt instead of points/box (the frame's size)")
    clear_old: StrictBool = Field(True, description="replace this object's earlier points on this frame")

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
    start_frame: StrictInt | None = Field(None, ge=0, description="default: the first prompted frame "
                                                            "(the last with reverse)")
    reverse: StrictBool = False
    max_frames: StrictInt | None = Field(None, ge=1, description="frames to track, the start included")


class Done(BaseModel):
    ok: bool = True
