"""``sam2kit serve``: the HTTP API and the page, one model shared by every client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from sam2kit.server.settings import ServeSettings

from sam2kit.cli.common import CLIError, Console, add_model_options, check_model_options, load_model, one_line

DESCRIPTION = """\
Serve SAM 2 over HTTP: the page at http://HOST:PORT/ (click to segment pictures, track objects
through videos) and the JSON API under /api (OpenAPI at /docs). One model is loaded and shared
by every client; model work runs on a bounded pool (503 with Retry-After when full); video
sessions expire. Stop with Ctrl-C or SIGTERM: every session is closed and the temporary files
are removed.
"""

_TYPES = {int: int, float: float, str: str, bool: bool}
_METAVARS = {"host": "HOST", "port": "PORT", "token": "TOKEN", "max_upload_mb": "MB", "session_ttl": "SECONDS",
             "spill_limit_gb": "GB", "label_studio_url": "URL", "label_studio_api_key": "KEY",
             "label_studio_preannotate": "MODE", "fetch_max_mb": "MB", "fetch_timeout": "SECONDS",
             "cvat_tracker_ttl": "SECONDS", "polygon_tolerance": "PIXELS",
             "header_timeout": "SECONDS", "keep_alive_timeout": "SECONDS",
             "stream_send_timeout": "SECONDS", "cors_origins": "ORIGINS"}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve the API and the page over HTTP", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("server (defaults suit one machine with a few users)")
    for name, default, help in ServeSettings.described():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action="store_true", help=help)
        elif name in ("media_root", "work_dir"):
            g.add_argument(flag, type=Path, metavar="DIR", help=help)
        else:
            kind = type(default) if default is not None else str
            g.add_argument(flag, type=_TYPES[kind], default=default, metavar=_METAVARS.get(name, "N"),
                           help=f"{help} (default: {default})" if default is not None else help)
    add_model_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no notes or access log (errors still printed)")
    p.set_defaults(run=command, json=False)
    return p


def command(args, console: Console) -> tuple[dict, str]:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise CLIError("sam2kit serve needs FastAPI and uvicorn: pip install 'sam2kit[serve]'") from None
    values = {name: getattr(args, name) for name, _, _ in ServeSettings.described()}
    settings = ServeSettings(**values)
    try:
        settings.check()
    except ValueError as e:
        raise CLIError(one_line(e)) from None
    check_model_options(args)
    model, info = load_model(args, console, args.resolution)
    from sam2kit.server import Service, create_app

    service = Service(model, settings, info["model_config"])
    if service.removed_stale:
        console.note(f"removed {len(service.removed_stale)} work folder(s) left by sam2kit serve processes "
                     f"that were killed: {', '.join(p.name for p in service.removed_stale)}")
    app = create_app(service)
    from sam2kit.server.protocol import with_header_timeout

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=not args.quiet, timeout_graceful_shutdown=5, lifespan="on",
                            http=with_header_timeout(settings.header_timeout),
                            timeout_keep_alive=settings.keep_alive_timeout,
                            limit_concurrency=settings.max_connections)
    server = _Server(config, console, settings)
    try:
        asyncio.run(server.serve())
    except (OSError, SystemExit) as e:  # uvicorn logs a failed bind and exits
        why = f": {e.strerror or e}" if isinstance(e, OSError) else " (the address is in use or not available here)"
        raise CLIError(f"cannot listen on {settings.host}:{settings.port}{why}; choose another --port "
                       "(0: any free one) or --host") from None
    finally:
        service.shutdown()  # (idempotent: nothing left if the app's shutdown ran)
    if server.failed:
        raise CLIError(f"cannot listen on {settings.host}:{settings.port}; choose another --port (0: any free "
                       "one) or --host")
    return {"stopped": True}, "sam2kit serve: stopped; sessions closed, temporary files removed"


class _Server:
    """uvicorn's server, printing the address it listens on once it does."""

    def __init__(self, config, console: Console, settings: ServeSettings):
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            async def startup(self, sockets=None):
                await super().startup(sockets)
                if self.started:
                    outer.announce(self)

            @contextlib.contextmanager
            def capture_signals(self):
                with super().capture_signals():
                    yield
                    # stopped by Ctrl-C or SIGTERM, as asked: end normally (exit 0) instead of
                    # uvicorn raising the signal again once it has shut down
                    outer.signals = list(getattr(self, "_captured_signals", []))
                    getattr(self, "_captured_signals", []).clear()

        self.inner = Server(config)
        self.console, self.settings = console, settings
        self.failed = False
        self.signals: list = []

    async def serve(self) -> None:
        await self.inner.serve()
        self.failed = not self.inner.started

    def announce(self, server) -> None:
        sock = server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{port}/"
        print(f"sam2kit serve: listening on {url} (API docs: {url}docs); Ctrl-C to stop", flush=True)
        if self.settings.token:
            self.console.note("every /api call needs the header `Authorization: Bearer TOKEN`")
        sys.stdout.flush()
