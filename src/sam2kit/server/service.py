"""The engine behind the routes: one model shared by every picture and video session, model
work on the bounded executor, the stores, and turning results into the wire format. The
routes only parse, call this, and present.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import amg
from ..automatic import SAM2AutomaticMaskGenerator, coco_annotations
from ..devices import RELEASE_EVERY
from ..images import ImageReadError, read_image
from ..predictor import SAM2ImagePredictor
from ..spill import DiskBudget, SpillLimitError
from ..video_io import FrameSource, VideoFileSource, open_frames
from ..video_predictor import SAM2VideoPredictor
from .executor import ModelExecutor
from .export import write_export
from .media import BadInput
from .settings import ServeSettings
from .store import Gone, ImageEntry, ImageStore, VideoEntry, VideoStore, close_entry


def coco_rle(mask: np.ndarray) -> dict:
    """HxW bool -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    return amg.coco_encode_rle(amg.mask_to_rle(mask))


def xywh(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


class Service:
    def __init__(self, model, settings: ServeSettings, model_name: str):
        self.model, self.settings, self.model_name = model, settings, model_name
        self.executor = ModelExecutor(settings.workers, settings.queue)
        self.images = ImageStore(settings.max_images)
        self.videos = VideoStore(settings.max_sessions, settings.session_ttl)
        # A correction click on a frame already tracked makes that frame a conditioning frame (as
        # SAM 2 is trained for interactive correction), so the next tracking keeps it; with the
        # reference's inference default (False) the next propagation through that frame
        # recomputes it and the correction is lost.
        self.video_predictor = SAM2VideoPredictor(model, add_all_frames_to_correct_as_cond=True)
        self.disk = DiskBudget(settings.spill_limit_bytes)
        if settings.work_dir is not None:
            Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="sam2kit-serve-", dir=settings.work_dir))
        self.spill_dir = self.work_dir / "spill"
        self.spill_dir.mkdir()
        self.started = time.time()

    # ---- pictures --------------------------------------------------------------------------

    async def open_image(self, path: Path, digest: str, owned: bool) -> tuple[ImageEntry, bool]:
        """The entry of the picture at ``path`` (content ``digest``), its embedding computed
        once; (entry, whether it was there already)."""
        image_id = digest[:24]
        entry = self.images.find(image_id)
        if entry is not None:
            if owned:
                path.unlink(missing_ok=True)
            if entry.ready is not None:
                await asyncio.shield(entry.ready)
            return self.images.get(image_id), True
        try:
            array = read_image(path, self.settings.max_pixels, name="the upload" if owned else path.name)
        except ImageReadError as e:
            if owned:
                path.unlink(missing_ok=True)
            raise BadInput(415 if "not an image format" in str(e) else 422, str(e)) from None
        h, w = array.shape[:2]
        entry = ImageEntry(image_id, path, owned, w, h, ready=asyncio.get_running_loop().create_future())
        self.images.add(entry)
        try:
            entry.embedding = await self.executor.run(self._embed, array, lane="interactive")
        except BaseException as e:
            self.images.remove(image_id, "its embedding failed")
            entry.ready.set_exception(e)
            entry.ready.exception()  # (retrieved: no "never retrieved" warning)
            raise
        entry.ready.set_result(None)
        entry.ready = None
        return entry, False

    def _embed(self, array: np.ndarray):
        with torch.inference_mode():
            predictor = SAM2ImagePredictor(self.model)
            predictor.set_image(array)
            return predictor.embedding

    async def predict(self, image_id: str, req) -> dict:
        entry = await self._ready(image_id)
        mask_input = None
        if req.mask_input is not None:
            mask_input = entry.logits.get(req.mask_input)
            if mask_input is None:
                raise BadInput(404, f"no logits {req.mask_input!r} for this picture (each picture keeps its "
                                    "last 64); send the clicks again without mask_input")
        for x, y in req.points:
            self._check_inside(x, y, entry.width, entry.height, "point")
        if req.box is not None:
            self._check_box(req.box, entry.width, entry.height)
        masks, scores, logits = await self.executor.run(self._predict, entry, req, mask_input)
        out = []
        for m, score, lg in zip(masks, scores, logits):
            m = m.astype(bool)
            out.append({"rle": coco_rle(m), "score": float(score), "area": int(m.sum()), "bbox": xywh(m),
                        "logits_id": entry.keep_logits(lg[None])})
        best = int(np.argmax(scores))
        return {"masks": out, "best": best, "logits_id": out[best]["logits_id"]}

    def _predict(self, entry: ImageEntry, req, mask_input):
        predictor = SAM2ImagePredictor(self.model)
        predictor.set_embedding(entry.embedding)
        points = np.array(req.points, dtype=np.float32) if req.points else None
        labels = np.array(req.labels, dtype=np.int32) if req.points else None
        box = np.array(req.box, dtype=np.float32) if req.box is not None else None
        return predictor.predict(points, labels, box, mask_input, multimask_output=req.multimask)

    async def picture_jpeg(self, image_id: str, quality: int) -> bytes:
        entry = self.images.get(image_id)
        return await asyncio.to_thread(_picture_jpeg, entry.path, self.settings.max_pixels, quality)

    async def _ready(self, image_id: str) -> ImageEntry:
        """The picture's entry once its embedding is there (another request may be making it)."""
        entry = self.images.get(image_id)
        if entry.ready is not None:
            await asyncio.shield(entry.ready)
        return entry

    async def automatic(self, image_id: str, req) -> dict:
        entry = await self._ready(image_id)
        records = await self.executor.run(self._automatic, entry, req.model_dump(), lane="bulk")
        return {"images": [{"id": 1, "width": entry.width, "height": entry.height}],
                "categories": [{"id": 1, "name": "object"}],
                "annotations": coco_annotations(records, image_id=1)}

    def _automatic(self, entry: ImageEntry, params: dict):
        array = read_image(entry.path, self.settings.max_pixels)
        generator = SAM2AutomaticMaskGenerator(self.model, output_mode="uncompressed_rle", **params)
        with torch.inference_mode():
            return generator.generate(array)

    # ---- videos ----------------------------------------------------------------------------

    async def open_video(self, path: Path, owned: bool) -> VideoEntry:
        for old in self.videos.make_room():
            await self._close(old)
        try:
            frames = self._frames(path)
        except BadInput:
            if owned:
                path.unlink(missing_ok=True)
            raise
        try:
            state = await self.executor.run(self._init_state, frames, lane="interactive")
        except BaseException:
            frames.close()
            if owned:
                path.unlink(missing_ok=True)
            raise
        for old in self.videos.make_room():  # (another request may have opened one meanwhile)
            await self._close(old)
        entry = VideoEntry(secrets.token_urlsafe(12), state, path, owned, frames.fps)
        self.videos.add(entry)
        return entry

    def _frames(self, path: Path) -> FrameSource:
        """A frame source for an uploaded file or a media-root path, judged by its contents."""
        if not path.is_dir() and self._sniff(path) == "image":
            raise BadInput(415, "this is a single picture, not a video: open it with POST /api/images")
        try:
            frames = open_frames(path) if path.is_dir() else VideoFileSource(path, 64 * 2**20)
        except (ValueError, OSError, RuntimeError) as e:
            why = " ".join(str(e).replace(str(path), "the file").split())
            raise BadInput(415 if not path.is_dir() else 422,
                           f"cannot read this video: {why}; send a video file FFmpeg can decode (mp4, mov, "
                           "mkv, webm, ...) or a folder of JPEG/PNG frames") from None
        if frames.width * frames.height > self.settings.max_pixels:
            frames.close()
            raise BadInput(413, f"the video's frames are {frames.width}x{frames.height}, over this server's "
                                f"limit of {self.settings.max_pixels:,} pixels (--max-pixels); scale it down")
        return frames

    @staticmethod
    def _sniff(path: Path) -> str | None:
        from PIL import Image

        if path.is_dir():
            return None
        try:
            with Image.open(path) as im:  # (an animated GIF is a video)
                return "image" if getattr(im, "n_frames", 1) == 1 else None
        except Exception:  # noqa: BLE001 - not a picture: perhaps a video
            return None

    def _init_state(self, frames: FrameSource):
        try:
            return self.video_predictor.init_state(frames, offload_state_to_cpu=True, spill_dir=self.spill_dir,
                                                   spill_limit_bytes=self.disk,
                                                   release_memory_every=RELEASE_EVERY)
        except (ValueError, RuntimeError, OSError) as e:
            why = " ".join(str(e).replace(str(frames_path(frames)), "the file").split())
            raise BadInput(422, f"cannot read the video's first frame: {why}") from None

    async def _close(self, entry: VideoEntry) -> None:
        async with entry.lock:  # a job running on it finishes first
            await asyncio.to_thread(close_entry, entry)

    async def close_video(self, session_id: str, why: str = "deleted") -> None:
        entry = self.videos.take(session_id, why)
        await self._close(entry)

    async def expire_idle(self) -> None:
        for entry in self.videos.idle():
            await self._close(entry)

    def _check_inside(self, x: float, y: float, w: int, h: int, what: str) -> None:
        if not (0 <= x <= w and 0 <= y <= h):
            raise BadInput(422, f"{what} ({x:g}, {y:g}) is outside the {w}x{h} picture; coordinates are "
                                "pixels, x from 0 to the width, y from 0 to the height")

    def _check_box(self, box, w: int, h: int) -> None:
        x0, y0, x1, y1 = box
        self._check_inside(x0, y0, w, h, "box corner")
        self._check_inside(x1, y1, w, h, "box corner")
        if x1 <= x0 or y1 <= y0:
            raise BadInput(422, f"box {list(box)} is empty or reversed; give [x0, y0, x1, y1] with x1 > x0, y1 > y0")

    def session(self, session_id: str, for_change: bool = True) -> VideoEntry:
        entry = self.videos.get(session_id)
        if for_change and entry.propagating:
            raise BadInput(409, "this video is being tracked; wait for the stream to end or cancel it "
                                "(DELETE /api/videos/{id}/propagation) first")
        return entry

    async def run_on(self, entry: VideoEntry, fn, *args, lane: str = "interactive"):
        """``fn(*args)`` on the executor, one job at a time per session."""
        async with entry.lock:
            if entry.closed:
                raise self.videos.missing("video session", entry.session_id)
            try:
                return await self.executor.run(fn, *args, lane=lane)
            except SpillLimitError as e:
                raise BadInput(507, f"{e} (server: --spill-limit-gb)") from None

    def frame_result(self, entry: VideoEntry, frame_idx: int, obj_ids, masks: torch.Tensor) -> dict:
        """The wire form of every object's mask on a frame."""
        binary = (masks[:, 0] > 0).cpu().numpy()
        scores = entry.state.object_scores(frame_idx)
        return {"frame": int(frame_idx),
                "objects": [{"object": int(o), "rle": coco_rle(m), "object_score": s}
                            for o, m, s in zip(obj_ids, binary, scores)]}

    async def prompt(self, session_id: str, req) -> dict:
        entry = self.session(session_id)
        s = entry.state
        if req.frame >= s.num_frames:
            raise BadInput(422, f"frame {req.frame} is past the end of the video: it has {s.num_frames} "
                                f"frames (0 to {s.num_frames - 1})")
        w, h = s.video_width, s.video_height
        for x, y in req.points:
            self._check_inside(x, y, w, h, "point")
        if req.box is not None:
            self._check_box(req.box, w, h)
        mask = None
        if req.mask is not None:
            if tuple(req.mask.size) != (h, w):
                raise BadInput(422, f"the mask is {req.mask.size[0]}x{req.mask.size[1]} (HxW) but the video's "
                                    f"frames are {h}x{w}; send a mask of the frame's size")
            try:
                mask = amg.rle_to_mask(req.mask.model_dump())
            except ValueError as e:
                raise BadInput(422, f"the mask's RLE is malformed: {e}") from None
        frame, obj_ids, masks = await self.run_on(entry, self._prompt, s, req, mask)
        return self.frame_result(entry, frame, obj_ids, masks)

    def _prompt(self, s, req, mask):
        p = self.video_predictor
        if mask is not None:
            return p.add_new_mask(s, req.frame, req.object, mask)
        return p.add_new_points_or_box(s, req.frame, req.object,
                                       points=req.points or None, labels=req.labels or None,
                                       clear_old_points=req.clear_old, box=req.box)

    # ---- tracking ---------------------------------------------------------------------------

    def start_propagation(self, session_id: str, req):
        """Check the request and mark the session as tracking; returns the stream of results
        (an async iterator of dicts: one per frame, then ``{"done": true, "frames": n}``)."""
        entry = self.session(session_id)
        s = entry.state
        if not s.objects:
            raise BadInput(409, "no object has a prompt yet; add clicks, a box or a mask first "
                                "(POST /api/videos/{id}/prompts)")
        if req.start_frame is not None and req.start_frame >= s.num_frames:
            raise BadInput(422, f"start_frame {req.start_frame} is past the end of the video: it has "
                                f"{s.num_frames} frames (0 to {s.num_frames - 1})")
        entry.propagating = True
        entry.cancel.clear()
        gen = self.video_predictor.propagate_in_video(s, req.start_frame, req.max_frames and req.max_frames - 1,
                                                      req.reverse, progress=False)
        return self._stream(entry, gen)

    async def _stream(self, entry: VideoEntry, gen):
        n = 0
        try:
            while True:
                if entry.cancel.is_set():
                    yield {"done": True, "cancelled": True, "frames": n}
                    return
                try:
                    item = await self.run_on(entry, next, gen, None, lane="bulk")
                except (BadInput, Gone) as e:  # (Gone: the session was closed meanwhile)
                    yield {"error": str(e), "frames": n}
                    return
                except (ValueError, RuntimeError, OSError) as e:
                    why = " ".join(str(e).replace(str(entry.path), "the video").split())
                    yield {"error": f"tracking stopped: {why}", "frames": n}
                    return
                if item is None:
                    break
                frame, obj_ids, masks = item
                n += 1
                yield self.frame_result(entry, frame, obj_ids, masks)
            yield {"done": True, "frames": n}
        finally:
            entry.propagating = False
            entry.touch()  # idle from now on, not from before the tracking
            gen.close()  # (no job runs it now: run_on waits for a cancelled job to end)

    def cancel_propagation(self, session_id: str) -> bool:
        entry = self.videos.get(session_id)
        if entry.propagating:
            entry.cancel.set()
        return entry.propagating

    async def remove_object(self, session_id: str, obj: int) -> list[int]:
        entry = self.session(session_id)
        if obj not in entry.state.obj_ids:
            raise BadInput(404, f"the video has no object {obj}; its objects are {entry.state.obj_ids}")
        obj_ids, _ = await self.run_on(entry, self.video_predictor.remove_object, entry.state, obj, True, False)
        return list(obj_ids)

    async def reset(self, session_id: str) -> None:
        entry = self.session(session_id)
        await self.run_on(entry, self.video_predictor.reset_state, entry.state)

    async def frame_masks(self, session_id: str, frame_idx: int) -> dict:
        entry = self.session(session_id, for_change=False)  # (read between the tracking's frame jobs)
        s = entry.state
        if not 0 <= frame_idx < s.num_frames:
            raise BadInput(404, f"frame {frame_idx} is outside the video: it has {s.num_frames} frames "
                                f"(0 to {s.num_frames - 1})")
        got = await self.run_on(entry, self.video_predictor.frame_masks, s, frame_idx)
        if got is None:
            return {"frame": frame_idx, "objects": []}
        return self.frame_result(entry, frame_idx, *got)

    async def frame_jpeg(self, session_id: str, frame_idx: int, quality: int = 90) -> bytes:
        entry = self.videos.get(session_id)
        s = entry.state
        if not 0 <= frame_idx < s.num_frames:
            raise BadInput(404, f"frame {frame_idx} is outside the video: it has {s.num_frames} frames "
                                f"(0 to {s.num_frames - 1})")
        return await asyncio.to_thread(_jpeg, s.frames, frame_idx, quality)

    async def export(self, session_id: str, fmt: str) -> Path:
        """A zip (davis: palette PNGs; masks: per-object PNGs) or the overlay mp4 of every
        tracked frame, written in the work folder; the caller deletes it after sending."""
        entry = self.session(session_id)
        if not entry.state.tracked_frames:
            raise BadInput(409, "nothing to export yet: prompt an object and track the video first")
        target = self.work_dir / f"export-{secrets.token_hex(6)}.{'mp4' if fmt == 'mp4' else 'zip'}"
        try:
            await self.run_on(entry, write_export, self.video_predictor, entry.state, fmt, target, entry.fps,
                              lane="bulk")
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def shutdown(self) -> None:
        """Stop tracking, let running jobs end, close every session and remove the work folder
        (uploads, spill folders, exports)."""
        entries = self.videos.all()
        for entry in entries:
            self.videos.take(entry.session_id, "the server stopped")  # (sets its cancel flag)
        self.executor.shutdown()
        for entry in entries:
            close_entry(entry)
        self.images.clear()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def frames_path(frames: FrameSource) -> str:
    return str(getattr(frames, "path", "") or getattr(frames, "folder", "") or "\x00")


def _jpeg(frames: FrameSource, frame_idx: int, quality: int) -> bytes:
    try:
        array = frames.get(frame_idx)
    except (ValueError, RuntimeError, OSError) as e:
        raise BadInput(422, f"frame {frame_idx} cannot be decoded: {' '.join(str(e).split())}") from None
    return _encode_jpeg(array, quality)


def _picture_jpeg(path: Path, max_pixels: int, quality: int) -> bytes:
    try:
        return _encode_jpeg(read_image(path, max_pixels), quality)
    except ImageReadError as e:  # (the file went away under the media root)
        raise BadInput(410, str(e)) from None


def _encode_jpeg(array: np.ndarray, quality: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
