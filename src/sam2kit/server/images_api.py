"""``/api/images``: open a picture, prompt it, segment everything in it."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from starlette.requests import ClientDisconnect

from sam2kit.server.media import BadInput, file_digest, save_upload, under_root
from sam2kit.server.schemas import (AutomaticRequest, ImageInfo, OpenRequest, PredictRequest, PredictResponse,
                                    open_body)
from sam2kit.server.web import sample_path

router = APIRouter(prefix="/api/images", tags=["images"])


async def received_file(request: Request, service, what: str):
    """(path, digest, owned) of what a POST brought: the multipart field ``file`` (copied into
    the work folder) or JSON ``{"path": ...}`` / ``{"sample": ...}``."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=4)
        except ClientDisconnect:  # (or cut off past --max-upload-mb: the 413 went out already)
            raise BadInput(400, "the upload ended before it was complete; send it again") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput(400, f"send the {what} in the multipart field 'file'")
        path, digest = await save_upload(upload, service.work_dir, service.settings.max_upload_bytes)
        return path, digest, True
    if kind.startswith("application/json"):
        try:
            body = OpenRequest.model_validate_json(await request.body())
        except ValueError as e:
            raise BadInput(422, _first_error(e)) from None
        path = sample_path(body.sample) if body.sample else under_root(service.settings.media_root, body.path)
        if path.is_dir() and what == "picture":
            raise BadInput(422, f"{body.path!r} is a folder, not a picture")
        return path, (file_digest(path) if path.is_file() else None), False
    raise BadInput(415, f"send the {what} as multipart/form-data (field 'file') or JSON "
                        '{"path": "relative/to/media-root"}')


def _first_error(e) -> str:
    errors = getattr(e, "errors", lambda: [])()
    if errors:
        err = errors[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        return f"{where + ': ' if where else ''}{err.get('msg', e)}"
    return str(e)


@router.post("", status_code=201, response_model=ImageInfo, openapi_extra=open_body("picture"),
             summary="Open a picture (multipart field 'file', or JSON {path} under the media root)")
async def open_image(request: Request, response: Response):
    service = request.app.state.service
    path, digest, owned = await received_file(request, service, "picture")
    entry, cached = await service.pictures.open(path, digest, owned)
    response.headers["Location"] = f"/api/images/{entry.image_id}"
    return ImageInfo(image_id=entry.image_id, width=entry.width, height=entry.height, cached=cached)


@router.post("/{image_id}/predict", response_model=PredictResponse,
             summary="Masks of a prompt: clicks, a box and/or a previous mask")
async def predict(image_id: str, req: PredictRequest, request: Request):
    return await request.app.state.service.pictures.predict(image_id, req)


@router.post("/{image_id}/automatic", summary="Every mask in the picture (COCO-style annotations)")
async def automatic(image_id: str, req: AutomaticRequest, request: Request):
    return await request.app.state.service.pictures.automatic(image_id, req)


@router.get("/{image_id}/picture", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}},
            summary="The picture as the model sees it (EXIF orientation applied), as JPEG")
async def picture(image_id: str, request: Request, quality: int = Query(92, ge=30, le=100)):
    data = await request.app.state.service.pictures.jpeg(image_id, quality)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/{image_id}", status_code=204, summary="Forget a picture and its embedding")
async def delete_image(image_id: str, request: Request):
    request.app.state.service.pictures.store.remove(image_id)
    return Response(status_code=204)
