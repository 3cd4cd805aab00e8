"""``/cvat/...``: the protocol of CVAT's SAM serverless functions (see
``sam2kit.formats.cvat_protocol``): ``POST /cvat/interactor`` (points [+ box] -> mask) and
``POST /cvat/tracker`` (shapes and states across frames). Behind ``--token`` like ``/api``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from sam2kit.formats.cvat_protocol import ShapeTracker, decode_image, interact, interactor_prompt
from sam2kit.image.predictor import SAM2ImagePredictor
from sam2kit.server.media import BadInput
from sam2kit.video.predictor import SAM2VideoPredictor

router = APIRouter(prefix="/cvat", tags=["cvat"])


class InteractorRequest(BaseModel):
    """What CVAT's lambda manager sends an interactor (pixels of the picture)."""

    image: str = Field(description="the picture, base64")
    pos_points: list[list[float]] = Field(default_factory=list, description="[[x, y], ...] foreground clicks")
    neg_points: list[list[float]] = Field(default_factory=list, description="[[x, y], ...] background clicks")
    obj_bbox: list[list[float]] | None = Field(None, description="[[x1, y1], [x2, y2]] or null")


class InteractorResponse(BaseModel):
    mask: list[list[int]] = Field(description="HxW, 1 = object")


class TrackerRequest(BaseModel):
    """What CVAT's lambda manager sends a tracker: one frame, its shapes and their states."""

    image: str = Field(description="the frame, base64")
    shapes: list[Any] = Field(default_factory=list, description="[x1, y1, x2, y2] or {type, points} per shape")
    states: list[dict | None] = Field(default_factory=list, description="the previous answer's states (null: start)")


class TrackerResponse(BaseModel):
    shapes: list[Any]
    states: list[dict]


class Trackers:
    """The table of CVAT tracks: at most ``limit`` (least recently used dropped), each dropped
    after ``ttl`` seconds without a frame. Only the state's key and frame count go to CVAT."""

    def __init__(self, model, limit: int, ttl: float):
        self.predictor = SAM2VideoPredictor(model)  # the reference's defaults: the same masks as a file
        self.limit, self.ttl = limit, ttl
        self._tracks: OrderedDict[str, tuple[ShapeTracker, float]] = OrderedDict()
        self._busy: set[str] = set()

    def expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, t) in self._tracks.items() if now - t > self.ttl and k not in self._busy]:
            self._tracks.pop(key)[0].close()

    def add(self, tracker: ShapeTracker) -> dict:
        self.expire()
        while len(self._tracks) >= self.limit:
            _, (old, _) = self._tracks.popitem(last=False)
            old.close()
        key = secrets.token_urlsafe(12)
        self._tracks[key] = (tracker, time.monotonic())
        return {"tracker": key, "frames": tracker.frames}

    def take(self, state: dict) -> tuple[str, ShapeTracker]:
        key = state.get("tracker") if isinstance(state, dict) else None
        self.expire()
        if key not in self._tracks:
            raise BadInput(410, "states: this track is no longer on the server (expired after "
                                f"{self.ttl:g} s without a frame, dropped for newer tracks, or the server "
                                "restarted); start tracking the shape again from this frame")
        if key in self._busy:
            raise BadInput(409, "states: this track is being tracked by another request; send frames one at a time")
        tracker, _ = self._tracks[key]
        if state.get("frames") != tracker.frames:
            raise BadInput(409, f"states: the state is from frame {state.get('frames')} of the track, which is at "
                                f"frame {tracker.frames}; send the state of the last answer")
        self._busy.add(key)
        return key, tracker

    def give_back(self, key: str, tracker: ShapeTracker) -> dict:
        self._busy.discard(key)
        self._tracks[key] = (tracker, time.monotonic())
        self._tracks.move_to_end(key)
        return {"tracker": key, "frames": tracker.frames}


def _trackers(request: Request) -> Trackers:
    app = request.app
    if getattr(app.state, "cvat_trackers", None) is None:
        s = app.state.service.settings
        app.state.cvat_trackers = Trackers(app.state.service.model, s.cvat_trackers, s.cvat_tracker_ttl)
    return app.state.cvat_trackers


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(422, "image: not base64; send the picture's bytes base64-encoded, as CVAT does") from None


@router.post("/interactor", response_model=InteractorResponse,
             summary="CVAT interactor: positive/negative points [+ box] -> the best mask")
async def interactor(req: InteractorRequest, request: Request):
    service = request.app.state.service
    raw = _b64(req.image)
    work = service.work_dir / f"cvat-{secrets.token_hex(8)}.img"  # (open() removes it if the picture is known)
    await asyncio.to_thread(work.write_bytes, raw)
    entry, _ = await service.pictures.open(work, hashlib.sha256(raw).hexdigest(), True)
    try:
        points, labels, box = interactor_prompt(req.pos_points, req.neg_points, req.obj_bbox, entry.width, entry.height)
    except ValueError as e:
        raise BadInput(422, str(e)) from None

    def run():
        predictor = SAM2ImagePredictor(service.model)
        predictor.set_embedding(entry.embedding)
        with torch.inference_mode():
            return interact(predictor, points, labels, box)

    mask = await service.executor.run(run)
    return {"mask": mask.astype(np.uint8).tolist()}


@router.post("/tracker", response_model=TrackerResponse,
             summary="CVAT tracker: shapes on this frame from their states on the previous one")
async def tracker(req: TrackerRequest, request: Request):
    service, trackers = request.app.state.service, _trackers(request)
    if len(req.states) > len(req.shapes):
        raise BadInput(422, f"states: {len(req.states)} states for {len(req.shapes)} shapes; one state (or null) a shape")
    try:
        image = await asyncio.to_thread(decode_image, req.image, service.settings.max_pixels)
    except ValueError as e:
        raise BadInput(422, str(e)) from None
    shapes, states = [], []
    for i, shape in enumerate(req.shapes):
        state = req.states[i] if i < len(req.states) else None
        if state is None:
            try:
                t = await service.executor.run(ShapeTracker, trackers.predictor, image, shape)
            except ValueError as e:
                raise BadInput(422, f"shape {i}: {e}") from None
            shapes.append(shape)  # (as CVAT's trackers answer the frame a track starts on)
            states.append(trackers.add(t))
            continue
        key, t = trackers.take(state)
        try:
            shapes.append(await service.executor.run(t.step, image))
        except ValueError as e:
            raise BadInput(422, f"shape {i}: {e}") from None
        finally:
            states.append(trackers.give_back(key, t))
    return {"shapes": shapes, "states": states}
