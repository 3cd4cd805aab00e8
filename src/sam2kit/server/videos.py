"""Video sessions on the server: opened, prompted on any frame, tracked as a stream, exported."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import torch

from sam2kit.image import amg
from sam2kit.devices import RELEASE_EVERY
from sam2kit.video.spill import SpillLimitError
from sam2kit.video.io import FrameSource, VideoFileSource, open_frames
from sam2kit.video.predictor import SAM2VideoPredictor
from sam2kit.server.export import write_export
from sam2kit.server.media import BadInput
from sam2kit.server.store import Gone, VideoEntry, VideoStore, close_entry
from sam2kit.server.wire import check_box, check_inside, coco_rle, encode_jpeg


class Videos:
    """The videos' side of the service: the sessions and what the routes ask of them."""

    def __init__(self, service):
        self.service = service
        self.store = VideoStore(service.settings.max_sessions, service.settings.session_ttl)
        # A correction click on a frame already tracked makes that frame a conditioning frame (as
        # SAM 2 is trained for interactive correction), so the next tracking keeps it; with the
        # reference's inference default (False) the next propagation through that frame
        # recomputes it and the correction is lost.
        self.predictor = SAM2VideoPredictor(service.model, add_all_frames_to_correct_as_cond=True)

    async def open(self, path: Path, owned: bool) -> VideoEntry:
        for old in self.store.make_room():
            await self._close(old)
        try:
            frames = self._frames(path)
        except BadInput:
            if owned:
                path.unlink(missing_ok=True)
            raise
        try:
            state = await self.service.executor.run(self._init_state, frames, lane="interactive")
        except BaseException:
            frames.close()
            if owned:
                path.unlink(missing_ok=True)
            raise
        for old in self.store.make_room():  # (another request may have opened one meanwhile)
            await self._close(old)
        entry = VideoEntry(secrets.token_urlsafe(12), state, path, owned, frames.fps)
        self.store.add(entry)
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
        if frames.width * frames.height > self.service.settings.max_pixels:
            frames.close()
            raise BadInput(413, f"the video's frames are {frames.width}x{frames.height}, over this server's "
                                f"limit of {self.service.settings.max_pixels:,} pixels (--max-pixels); scale it down")
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
            return self.predictor.init_state(frames, offload_state_to_cpu=True, spill_dir=self.service.spill_dir,
                                                   spill_limit_bytes=self.service.disk,
                                                   release_memory_every=RELEASE_EVERY)
        except (ValueError, RuntimeError, OSError) as e:
            why = " ".join(str(e).replace(str(frames_path(frames)), "the file").split())
            raise BadInput(422, f"cannot read the video's first frame: {why}") from None

    async def _close(self, entry: VideoEntry) -> None:
        async with entry.lock:  # a job running on it finishes first
            await asyncio.to_thread(close_entry, entry)

    async def close(self, session_id: str, why: str = "deleted") -> None:
        entry = self.store.take(session_id, why)
        await self._close(entry)

    async def expire_idle(self) -> None:
        for entry in self.store.idle():
            await self._close(entry)

    def session(self, session_id: str, for_change: bool = True) -> VideoEntry:
        entry = self.store.get(session_id)
        if for_change and entry.propagating:
            raise BadInput(409, "this video is being tracked; wait for the stream to end or cancel it "
                                "(DELETE /api/videos/{id}/propagation) first")
        return entry

    async def run_on(self, entry: VideoEntry, fn, *args, lane: str = "interactive"):
        """``fn(*args)`` on the executor, one job at a time per session."""
        async with entry.lock:
            if entry.closed:
                raise self.store.missing("video session", entry.session_id)
            try:
                return await self.service.executor.run(fn, *args, lane=lane)
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
            check_inside(x, y, w, h, "point")
        if req.box is not None:
            check_box(req.box, w, h)
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
        p = self.predictor
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
        gen = self.predictor.propagate_in_video(s, req.start_frame, req.max_frames and req.max_frames - 1,
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
        entry = self.store.get(session_id)
        if entry.propagating:
            entry.cancel.set()
        return entry.propagating

    async def remove_object(self, session_id: str, obj: int) -> list[int]:
        entry = self.session(session_id)
        if obj not in entry.state.obj_ids:
            raise BadInput(404, f"the video has no object {obj}; its objects are {entry.state.obj_ids}")
        obj_ids, _ = await self.run_on(entry, self.predictor.remove_object, entry.state, obj, True, False)
        return list(obj_ids)

    async def reset(self, session_id: str) -> None:
        entry = self.session(session_id)
        await self.run_on(entry, self.predictor.reset_state, entry.state)

    async def frame_masks(self, session_id: str, frame_idx: int) -> dict:
        entry = self.session(session_id, for_change=False)  # (read between the tracking's frame jobs)
        s = entry.state
        if not 0 <= frame_idx < s.num_frames:
            raise BadInput(404, f"frame {frame_idx} is outside the video: it has {s.num_frames} frames "
                                f"(0 to {s.num_frames - 1})")
        got = await self.run_on(entry, self.predictor.frame_masks, s, frame_idx)
        if got is None:
            return {"frame": frame_idx, "objects": []}
        return self.frame_result(entry, frame_idx, *got)

    async def frame_jpeg(self, session_id: str, frame_idx: int, quality: int = 90) -> bytes:
        entry = self.store.get(session_id)
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
        target = self.service.work_dir / f"export-{secrets.token_hex(6)}.{'mp4' if fmt == 'mp4' else 'zip'}"
        try:
            await self.run_on(entry, write_export, self.predictor, entry.state, fmt, target, entry.fps,
                              lane="bulk")
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def close_all(self) -> list[VideoEntry]:
        """Take every session out (their tracking is cancelled); the caller closes them."""
        return [self.store.take(e.session_id, "the server stopped") for e in self.store.all()]


def frames_path(frames: FrameSource) -> str:
    return str(getattr(frames, "path", "") or getattr(frames, "folder", "") or "\x00")


def _jpeg(frames: FrameSource, frame_idx: int, quality: int) -> bytes:
    try:
        array = frames.get(frame_idx)
    except (ValueError, RuntimeError, OSError) as e:
        raise BadInput(422, f"frame {frame_idx} cannot be decoded: {' '.join(str(e).split())}") from None
    return encode_jpeg(array, quality)
