"""``/label-studio``: the Label Studio ML backend protocol (the URL pasted into "Connect model").

Label Studio 1.2x (``ml/api_connector.py``) calls ``GET /health`` (1 s), ``POST /setup`` (3 s),
``POST /predict`` (100 s) and ``POST /webhook``, with the JSON of the official ``label-studio-ml``
backends. Neither health nor setup touches the model (it is loaded before the server listens).
Conversions (percent, brush RLE, results) live in ``sam2kit.formats.labelstudio``; pictures go
through the server's picture store (one embedding per picture content: a second click on a task
costs a decode), videos through its video sessions (spilled, flat memory).

Errors: Label Studio shows a backend's failure as ``str(requests.HTTPError)`` -- status, reason
phrase and URL, never the body (``MLApi._request``). So a refusal answers ``307`` to
``/label-studio/error/<the-message-as-words>``, which answers 422: the message then reaches
Label Studio's "Connect model" dialog and its interactive-annotation errors inside that URL. The
first answer's body carries the message as ``{"error": ...}`` too, for clients that do not follow.
"""

from __future__ import annotations

import re

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sam2kit import __version__
from sam2kit.formats import labelstudio as ls
from sam2kit.server.fetch import Fetcher
from sam2kit.server.media import BadInput
from sam2kit.server.schemas import PredictRequest
from sam2kit.server.store import Gone
from sam2kit.server.wire import check_box

router = APIRouter(prefix="/label-studio", tags=["label studio"])

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")
REMEMBERED_URLS = 256


class Refused(Exception):
    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def refusal(e: Refused) -> JSONResponse:
    words = re.sub(r"[^A-Za-z0-9]+", "-", str(e)).strip("-")[:400]
    return JSONResponse({"error": str(e)}, status_code=307,
                        headers={"Location": f"/label-studio/error/{e.status}/{words}"})


class LabelStudio:
    """The Label Studio side of the service: which task URL is which picture or video session."""

    def __init__(self, service):
        self.service = service
        self.fetcher = Fetcher(service.settings, service.work_dir)
        self.urls: dict[str, str] = {}  # task URL -> image_id or session_id (bounded, oldest first out)
        self.model_version = f"sam2kit-{__version__}-{service.model_name}"

    def remember(self, url: str, key: str) -> None:
        self.urls.pop(url, None)
        self.urls[url] = key
        while len(self.urls) > REMEMBERED_URLS:
            self.urls.pop(next(iter(self.urls)))

    async def picture(self, url: str):
        """The picture store's entry of a task's picture, fetched only when it is not there."""
        pictures = self.service.pictures
        known = self.urls.get(url)
        if known is not None and pictures.store.find(known) is not None:
            return pictures.store.get(known)
        path, digest = await self.fetcher.fetch(url, "picture")
        entry, _ = await pictures.open(path, digest, owned=True)
        self.remember(url, entry.image_id)
        return entry

    async def video(self, url: str):
        videos = self.service.videos
        known = self.urls.get(url)
        if known is not None:
            try:
                return videos.session(known)
            except Gone:
                pass
        path, _ = await self.fetcher.fetch(url, "video")
        entry = await videos.open(path, owned=True)
        self.remember(url, entry.session_id)
        return entry

    # ---- predictions ---------------------------------------------------------------------------

    async def predict(self, body: dict) -> dict:
        config = ls.parse_label_config(body.get("label_config") or "")
        if any(o.kind == "polygonlabels" for o in config.outputs):
            _polygons_available()
        tasks = body.get("tasks") or []
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise Refused("tasks must be a list of Label Studio tasks")
        params = body.get("params") or {}
        regions = ((params.get("context") or {}).get("result")) or []
        if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
            raise Refused("params.context.result must be a list of Label Studio regions")
        if regions and not tasks:
            raise Refused("an interactive request needs the task it is about in tasks")
        if any(r.get("type") == "videorectangle" for r in regions):
            return {"results": [await self.track(tasks[0], regions, config)]}
        if any(r.get("type") in ls.PROMPTS for r in regions):
            return {"results": [await self.interactive(tasks[0], regions, config)]}
        return {"results": [await self.preannotate(task, config) for task in tasks]}

    def _url(self, task: dict, config: ls.LabelConfig, to_name: str) -> str:
        kind, key = config.objects[to_name]
        url = (task.get("data") or {}).get(key)
        if url is None:
            raise Refused(f"the task has no data field {key!r}, which the label config's <{kind.title()} "
                          f"name=\"{to_name}\" value=\"${key}\"> reads")
        return url

    async def _mask(self, entry, prompt: ls.Prompt):
        req = PredictRequest(points=[tuple(p) for p in prompt.points.tolist()], labels=prompt.labels.tolist(),
                             box=None if prompt.box is None else tuple(prompt.box.tolist()), multimask=True)
        masks, scores = await self.service.pictures.masks(entry.image_id, req)
        best = int(np.argmax(scores))  # the best of multimask_output=True, as the official backends
        return masks[best], float(scores[best])

    async def interactive(self, task: dict, regions: list, config: ls.LabelConfig) -> dict:
        try:
            prompt = ls.prompt_from_context(regions, config)
        except (ValueError, KeyError, TypeError) as e:
            raise Refused(f"cannot read the clicks: {e}") from None
        outputs = config.outputs_for(prompt.to_name)
        if not outputs:
            raise Refused(f"the label config has no <BrushLabels> or <PolygonLabels> on {prompt.to_name!r}, "
                          "where the clicks are; add one")
        entry = await self.picture(self._url(task, config, prompt.to_name))
        prompt = ls.prompt_from_context(regions, config, size=(entry.width, entry.height))
        mask, score = await self._mask(entry, prompt)
        results = ls.mask_results(mask, outputs, prompt.label, score, self.service.settings.polygon_tolerance)
        return ls.prediction(results, score, self.model_version)

    async def preannotate(self, task: dict, config: ls.LabelConfig) -> dict:
        kind, values = ls.parse_preannotate(self.service.settings.label_studio_preannotate)
        images = [o for o in config.outputs if o.kind != "videorectangle"]
        if kind == "off" or not images:  # (a video needs a rectangle to track: nothing to pre-annotate)
            return ls.prediction([], None, self.model_version)
        to_name = images[0].to_name
        outputs = config.outputs_for(to_name)
        entry = await self.picture(self._url(task, config, to_name))
        tol = self.service.settings.polygon_tolerance
        if kind != "auto":
            mask, score = await self._mask(entry, ls.preset_prompt(kind, values, to_name, entry.width, entry.height))
            return ls.prediction(ls.mask_results(mask, outputs, None, score, tol), score, self.model_version)
        from sam2kit.server.schemas import AutomaticRequest

        req = AutomaticRequest(points_per_side=self.service.settings.label_studio_points_per_side)
        records = await self.service.pictures.automatic_records(entry.image_id, req)
        results, scores = [], []
        for r in records:
            results += ls.mask_results(r["segmentation"], outputs, None, r["predicted_iou"], tol)
            scores.append(r["predicted_iou"])
        return ls.prediction(results, float(np.mean(scores)) if scores else None, self.model_version)

    async def track(self, task: dict, regions: list, config: ls.LabelConfig) -> dict:
        try:
            out, region, key = ls.video_prompt(regions, config)
        except (ValueError, StopIteration) as e:
            raise Refused(f"cannot track: {e or 'the label config has no <VideoRectangle>'}") from None
        entry = await self.video(self._url(task, config, out.to_name))
        s = entry.state
        w, h = s.video_width, s.video_height
        try:
            frame = int(key["frame"]) - 1
            x0, y0 = ls.percent_to_pixels(key["x"], w), ls.percent_to_pixels(key["y"], h)
            box = np.array([x0, y0, x0 + ls.percent_to_pixels(key["width"], w),
                            y0 + ls.percent_to_pixels(key["height"], h)], np.float32)
        except (KeyError, TypeError, ValueError):
            raise Refused("the video rectangle's keyframe needs frame, x, y, width and height") from None
        if not 0 <= frame < s.num_frames:
            raise Refused(f"the rectangle is on frame {frame + 1}, but the video has {s.num_frames} frames")
        check_box(box.tolist(), w, h)
        frames = self.service.settings.label_studio_max_frames
        videos = self.service.videos
        boxes = await videos.run_on(entry, _track, videos.predictor, s, frame, box, frames, lane="bulk")
        value = dict(region["value"])
        counted, duration = value.get("framesCount"), value.get("duration")
        ok = isinstance(counted, (int, float)) and isinstance(duration, (int, float)) and duration > 0
        fps = counted / duration if ok else entry.fps
        drawn = {int(k["frame"]) for k in value["sequence"]}
        tracked = [k for k in ls.videorectangle_sequence(boxes, fps) if k["frame"] not in drawn]
        value["sequence"] = sorted(list(value["sequence"]) + tracked, key=lambda k: int(k["frame"]))
        value.setdefault("framesCount", s.num_frames)
        result = {"id": region.get("id"), "from_name": out.from_name, "to_name": out.to_name,
                  "type": "videorectangle", "origin": "prediction", "value": value}
        return ls.prediction([result], None, self.model_version)


def _track(predictor, state, frame: int, box: np.ndarray, frames: int) -> dict:
    """Track one object from ``box`` on ``frame`` through ``frames`` frames (the start included)
    -> {frame index: box in percent or None}. Runs on the executor."""
    import torch

    with torch.inference_mode():
        predictor.reset_state(state)
        predictor.add_new_points_or_box(state, frame, 1, box=box)
        boxes = {}
        for idx, _, masks in predictor.propagate_in_video(state, frame, frames - 1, progress=False):
            boxes[int(idx)] = ls.box_percent((masks[0, 0] > 0).cpu().numpy())
    return boxes


def _polygons_available() -> None:
    try:
        from sam2kit.formats.polygons import _skimage_measure

        _skimage_measure()
    except ImportError as e:
        raise Refused(f"the label config has PolygonLabels, and {e}", 501) from None


def _bridge(request: Request) -> LabelStudio:
    app = request.app
    if getattr(app.state, "label_studio", None) is None:
        app.state.label_studio = LabelStudio(app.state.service)
    return app.state.label_studio


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise Refused("the body is not valid JSON", 400) from None
    if not isinstance(body, dict):
        raise Refused("the body must be a JSON object", 400)
    return body


@router.get("/health", summary="Label Studio's health check (never loads anything)")
@router.get("/", include_in_schema=False)
async def health(request: Request):
    return {"status": "UP", "model_class": "sam2kit", "model": request.app.state.service.model_name}


@router.post("/setup", summary="Label Studio's setup: checks the label config, gives the model version")
async def setup(request: Request):
    try:
        body = await _json(request)
        config = ls.parse_label_config(body.get("schema") or "")
        if any(o.kind == "polygonlabels" for o in config.outputs):
            _polygons_available()
    except (Refused, ls.LabelConfigError) as e:
        return refusal(e if isinstance(e, Refused) else Refused(str(e)))
    return {"model_version": _bridge(request).model_version}


@router.post("/predict", summary="Label Studio's predictions: interactive (context) or pre-annotation")
async def predict(request: Request):
    try:
        return await _bridge(request).predict(await _json(request))
    except ls.LabelConfigError as e:
        return refusal(Refused(str(e)))
    except Refused as e:
        return refusal(e)
    except BadInput as e:
        return refusal(Refused(str(e), e.status))


@router.post("/webhook", summary="Label Studio's training events: accepted, nothing is trained")
async def webhook(request: Request):
    try:
        body = await _json(request)
    except Refused as e:
        return refusal(e)
    event = body.get("action")
    if event not in TRAIN_EVENTS:
        return {"status": "Unknown event"}
    return JSONResponse({"status": "ok", "result": {"trained": False, "event": event,
                                                    "why": "sam2kit serves SAM 2 as it is; it does not train"}},
                        status_code=201)


@router.api_route("/error/{status}/{words:path}", methods=["GET", "POST"], include_in_schema=False)
async def error(status: int, words: str):
    return JSONResponse({"error": words.replace("-", " ")}, status_code=status if 400 <= status < 600 else 422)
