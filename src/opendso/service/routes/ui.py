"""The web UI: ``index.html`` at ``/`` and its assets under ``/static``, from a folder chosen at start-up.

:func:`ui_router` builds the router for a folder (the packaged ``static`` folder unless
``ServiceSettings.static_dir`` names another); the app adds it only when the folder has an
``index.html``. ``index.html`` is sent with ``Cache-Control: no-cache`` so a new release is seen
at the next load.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ui_router"]


def ui_router(static: Path) -> APIRouter:
    """Return a router serving the web UI in ``static`` (``index.html`` at ``/``, the rest under ``/static``)."""
    router = APIRouter()
    index = static / "index.html"

    @router.get("/", include_in_schema=False)
    def ui() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    router.mount("/static", StaticFiles(directory=static), name="static")
    return router
