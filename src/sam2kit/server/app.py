"""The FastAPI application: routers, the token check, errors as ``{"error": ...}`` with the
right status (never a 500 for bad input), session expiry in the background, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sam2kit import __version__
from sam2kit.server.executor import Busy as QueueFull
from sam2kit.server.media import BadInput, BodyLimit, list_media
from sam2kit.server.schemas import Health, error_responses
from sam2kit.server.settings import ServeSettings
from sam2kit.server.store import Busy as NoSession
from sam2kit.server.store import Gone
from sam2kit.server.web import page

log = logging.getLogger("sam2kit.serve")

DESCRIPTION = """\
SAM 2 over HTTP: pictures (clicks, boxes, previous masks; every mask) and videos (prompts on any
frame, tracking streamed as NDJSON, exports). Coordinates are pixels of the original picture or
frame (x right, y down); masks are COCO compressed RLE (`{"size": [H, W], "counts": "..."}`,
column-major). Errors are `{"error": "..."}`. Limits in force: `GET /api/health`.

Settings (defaults; `sam2kit serve --help`):
""" + "\n".join(f"- `{name}` ({default!r}): {help}" for name, default, help in ServeSettings.described())


def create_app(service) -> FastAPI:
    settings: ServeSettings = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        reaper = asyncio.create_task(_expire(service))
        try:
            yield
        finally:
            reaper.cancel()
            await asyncio.to_thread(service.shutdown)

    app = FastAPI(title="sam2kit", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  responses=error_responses())
    app.state.service = service
    from sam2kit.server.cvat import router as cvat
    from sam2kit.server.images_api import router as images
    from sam2kit.server.labelstudio import router as label_studio
    from sam2kit.server.videos_api import router as videos

    app.include_router(images)
    app.include_router(videos)
    app.include_router(cvat)
    app.include_router(label_studio)
    _errors(app)

    @app.middleware("http")
    async def token(request: Request, call_next):
        guarded = settings.token and request.url.path.startswith(API_PREFIXES)
        if guarded and not _authorized(request.headers.get("authorization", ""), settings.token,
                                       basic=request.url.path.startswith("/label-studio")):
            return _error(401, "this server needs a token: send `Authorization: Bearer TOKEN` "
                               "(the --token it was started with; Label Studio: Basic authentication, "
                               "any user name, the token as the password)", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.get("/api/health", response_model=Health, tags=["server"], summary="Model, device and limits")
    async def health():
        m = service.model
        return {"status": "ok", "model": service.model_name, "device": str(m.device),
                "image_size": m.image_size, "precision": m.precision,
                "backend": "torch" if m.encoder_backend is None else "openvino", "sessions": len(service.videos.store),
                "images": len(service.pictures.store), "queue": service.executor.outstanding,
                "limits": settings.public()}

    @app.get("/api/media", tags=["server"], summary="Videos, frame folders and pictures under the media root")
    async def media():
        if settings.media_root is None:
            return {"media_root": False, "entries": []}
        return {"media_root": True, "entries": await asyncio.to_thread(list_media, settings.media_root)}

    static = page()
    if static is not None:
        app.mount("/", _api_guard(app, static), name="page")
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024,  # (multipart framing)
                       shown=settings.max_upload_bytes)
    if settings.cors_list:  # closed unless asked: a page elsewhere may not call this API
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_list, allow_methods=["*"],
                           allow_headers=["authorization", "content-type"], max_age=600)
    return app


def _authorized(given: str, token: str, basic: bool) -> bool:
    """``Bearer TOKEN``; for Label Studio (whose ML backends authenticate with Basic auth only) also
    ``Basic`` with the token as the password (any user name)."""
    ok = secrets.compare_digest(given.encode(), f"Bearer {token}".encode())
    if basic and given.startswith("Basic "):
        import base64
        import binascii

        try:
            password = base64.b64decode(given[6:], validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok = secrets.compare_digest(password.encode(), token.encode())
    return ok


async def _expire(service) -> None:
    period = max(0.5, min(10.0, service.settings.session_ttl / 4))
    while True:
        await asyncio.sleep(period)
        try:
            await service.videos.expire_idle()
        except Exception:  # noqa: BLE001 - keep expiring whatever one session did
            log.exception("closing idle sessions failed")


API_PREFIXES = ("/api", "/cvat", "/label-studio")  # the routes' prefixes; everything else is the page


def _api_guard(app: FastAPI, static):
    """The page's files, but never for a path under an API prefix (/api, /cvat, /label-studio):
    those the routes did not take get 405 (with Allow) when a route serves the path with another
    method, else 404, as JSON."""
    async def guarded(scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and any(path == p or path.startswith(p + "/") for p in API_PREFIXES):
            request = Request(scope, receive)
            allowed = _allowed(request)
            if allowed:
                response = _error(405, f"{request.method} is not allowed on {path} (see /docs)",
                                  {"Allow": ", ".join(allowed)})
            else:
                response = _error(404, f"no such endpoint: {request.method} {path} (see /docs)")
            return await response(scope, receive, send)
        return await static(scope, receive, send)

    return guarded


def _allowed(request: Request) -> list[str]:
    """The methods some route serves on the request's path (Starlette names only the first's)."""
    from starlette.routing import Match

    methods: set[str] = set()

    def walk(routes) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # (FastAPI's included routers)
            if inner is not None:
                walk(inner.routes)
            elif getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
                methods.update(route.methods)

    walk(request.app.routes)
    return sorted(methods)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request, e: BadInput):
        return _error(e.status, str(e))

    @app.exception_handler(Gone)
    async def gone(request, e: Gone):
        return _error(404, str(e))

    @app.exception_handler(QueueFull)
    async def queue_full(request, e: QueueFull):
        return _error(503, f"the server is busy: every model worker is taken and the queue is full; retry "
                           f"in {e.retry_after} s", {"Retry-After": str(e.retry_after)})

    @app.exception_handler(NoSession)
    async def no_session(request, e: NoSession):
        return _error(503, str(e), {"Retry-After": "10"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return _error(400, "the body is not valid JSON; send a JSON object (Content-Type: application/json)")
        parts = []
        for err in errors[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where + ': ' if where else ''}{err.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) + " (see /docs for the request's schema)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        if e.status_code == 404:
            return _error(404, f"no such endpoint: {request.method} {request.url.path} (see /docs)")
        if e.status_code == 405:  # with the Allow header (RFC 9110): every route on this path's
            return _error(405, f"{request.method} is not allowed on {request.url.path} (see /docs)",
                          {"Allow": ", ".join(_allowed(request))})
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(ValueError)
    async def value_error(request, e: ValueError):  # the library's checks on prompts and inputs
        return _error(422, " ".join(str(e).split()))

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"unexpected {type(e).__name__} on the server (a bug: please report it with "
                           "the request that caused it)")
