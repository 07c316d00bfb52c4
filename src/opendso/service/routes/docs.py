"""The API documentation: Swagger UI at ``/api/docs``, its assets served by this service.

The page (``static/docs.html``) loads Swagger UI's scripts and styles from
``/api/docs/assets`` (fastapi-offline's copy) and starts it from an external script, so the
documentation works offline and under the strict Content-Security-Policy (only inline styles
are allowed there, see :data:`opendso.service.middleware.DOCS_CSP`). The OpenAPI document itself
is ``/api/openapi.json`` (set by :func:`~opendso.service.app.create_app`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "router"]

#: The packaged web UI and documentation page.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"

router = APIRouter()


@cache
def _page() -> str:
    return (STATIC_DIR / "docs.html").read_text(encoding="utf-8")


@router.get("/api/docs", include_in_schema=False)
def docs() -> Response:
    """The Swagger UI page."""
    return Response(_page(), media_type="text/html", headers={"Cache-Control": "no-cache"})


router.mount("/api/docs/assets", StaticFiles(directory=_ASSETS), name="docs-assets")
