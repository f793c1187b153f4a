"""Dependencies: routes declare what they need as plain annotated types.

They are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in the thread pool, which on every request costs a thread hand-off and,
under load, waits for the GIL (the cached predict path lost most of its
throughput to this). ``POST /v1/predict`` calls ``runtime_of`` itself: its route
skips dependency solving altogether (``predict.RequestRoute``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from ..errors import NotReady
from ..state import Runtime


def runtime_of(request: Request) -> Runtime:
    """The app's running components; 503 ``not_ready`` until the lifespan has built them."""
    return running(request.app)


def running(app: Any) -> Runtime:
    """``runtime_of`` for an ASGI layer, which has the app (``scope["app"]``) but no ``Request``."""
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise NotReady("the runtime is starting or stopping")
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_runtime_if_any(request: Request) -> Runtime | None:
    """For probes that must answer while starting (``/health``)."""
    return getattr(request.app.state, "runtime", None)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
MaybeRuntimeDep = Annotated[Runtime | None, Depends(get_runtime_if_any)]
