"""``/api/videos``: open a video, prompt objects on any frame, stream the tracking, export."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from sam2kit.server.images_api import received_file
from sam2kit.server.streaming import TimedStreamingResponse
from sam2kit.server.schemas import open_body
from sam2kit.server.schemas import FrameResult, PromptRequest, PropagateRequest, VideoInfo, VideoState

router = APIRouter(prefix="/api/videos", tags=["videos"])


def _info(entry) -> dict:
    s = entry.state
    return {"session_id": entry.session_id, "num_frames": s.num_frames, "width": s.video_width,
            "height": s.video_height, "fps": entry.fps}


@router.post("", status_code=201, response_model=VideoInfo, openapi_extra=open_body("video"),
             summary="Open a video (multipart field 'file', or JSON {path}: a file or frame folder "
                     "under the media root)")
async def open_video(request: Request, response: Response):
    service = request.app.state.service
    path, _, owned = await received_file(request, service, "video")
    entry = await service.videos.open(path, owned)
    response.headers["Location"] = f"/api/videos/{entry.session_id}"
    return _info(entry)


@router.get("/{session_id}", response_model=VideoState, summary="A video session's state")
async def video_state(session_id: str, request: Request):
    entry = request.app.state.service.videos.store.get(session_id)
    return {**_info(entry), "objects": [int(o) for o in entry.state.obj_ids],
            "tracked_frames": len(entry.state.tracked_frames), "propagating": entry.propagating}


@router.get("/{session_id}/frames/{frame}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}}, summary="A frame as JPEG")
async def frame(session_id: str, frame: int, request: Request, quality: int = Query(90, ge=30, le=100)):
    data = await request.app.state.service.videos.frame_jpeg(session_id, frame, quality)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{session_id}/frames/{frame}/masks", response_model=FrameResult,
            summary="Every object's current mask on a frame")
async def frame_masks(session_id: str, frame: int, request: Request):
    return await request.app.state.service.videos.frame_masks(session_id, frame)


@router.post("/{session_id}/prompts", response_model=FrameResult,
             summary="Clicks, a box or a mask for one object on one frame; every object's mask there")
async def prompt(session_id: str, req: PromptRequest, request: Request):
    return await request.app.state.service.videos.prompt(session_id, req)


@router.post("/{session_id}/propagate", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}},
                              "description": 'one JSON line per frame as it is tracked ({"frame", "objects"}), '
                                             'then {"done": true, "frames": n}; closing the connection cancels'}},
             summary="Track every object through the video, streamed as it goes")
async def propagate(session_id: str, req: PropagateRequest, request: Request):
    stream = request.app.state.service.videos.start_propagation(session_id, req)

    async def lines():
        try:
            async for item in stream:
                yield (json.dumps(item, separators=(",", ":")) + "\n").encode()
        finally:  # a client gone or too slow: the tracking stops here (``stream``'s finally)
            await stream.aclose()

    return TimedStreamingResponse(lines(), media_type="application/x-ndjson",
                                  headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                                  send_timeout=request.app.state.service.settings.stream_send_timeout)


@router.delete("/{session_id}/propagation", summary="Cancel the tracking in progress")
async def cancel(session_id: str, request: Request):
    return {"cancelled": request.app.state.service.videos.cancel_propagation(session_id)}


@router.delete("/{session_id}/objects/{obj}", summary="Remove an object, its prompts and results")
async def remove_object(session_id: str, obj: int, request: Request):
    return {"objects": await request.app.state.service.videos.remove_object(session_id, obj)}


@router.post("/{session_id}/reset", summary="Remove every object, prompt and result")
async def reset(session_id: str, request: Request):
    await request.app.state.service.videos.reset(session_id)
    return {"objects": []}


@router.get("/{session_id}/export", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}, "video/mp4": {}}}},
            summary="davis: zip of palette PNGs; masks: zip of per-object PNGs; mp4: the overlay video")
async def export(session_id: str, request: Request, format: Literal["davis", "masks", "mp4"] = "davis"):
    path = await request.app.state.service.videos.export(session_id, format)
    name = f"{session_id}-{format}.{'mp4' if format == 'mp4' else 'zip'}"
    return FileResponse(path, media_type="video/mp4" if format == "mp4" else "application/zip", filename=name,
                        background=BackgroundTask(path.unlink, missing_ok=True))


@router.delete("/{session_id}", status_code=204, summary="Close a video session and free what it holds")
async def close(session_id: str, request: Request):
    await request.app.state.service.videos.close(session_id)
    return Response(status_code=204)
