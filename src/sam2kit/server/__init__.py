"""``sam2kit serve``: SAM 2 over HTTP (FastAPI on uvicorn; ``pip install 'sam2kit[serve]'``).

``create_app(Service(model, ServeSettings(...), name))`` gives the ASGI application; the
command line (``sam2kit.cli.serve``) runs it with uvicorn.
"""

from sam2kit.server.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "Service"]


def __getattr__(name):  # FastAPI is an extra: imported when the server is asked for
    if name == "create_app":
        from sam2kit.server.app import create_app
        return create_app
    if name == "Service":
        from sam2kit.server.service import Service
        return Service
    raise AttributeError(name)
