"""The web dashboard at `/` and its static files at `/static/...`; `/docs` with Swagger UI served from here.

Everything the browser loads comes from this service (the files in api/dashboard, vendored libraries included),
so the dashboard and /docs work offline. The pages are public; their data calls go to /v1 with the user's key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
STATIC_PREFIX = "/static"
SWAGGER = f"{STATIC_PREFIX}/vendor/swagger-ui"

router = APIRouter(include_in_schema=False)
# StaticFiles resolves paths inside DASHBOARD_DIR only (no `..`, no absolute paths) and answers ETag and
# Last-Modified; a missing file is a 404.
_files = StaticFiles(directory=DASHBOARD_DIR)


@router.get("/")
def index() -> FileResponse:
    """The single-page dashboard (hash-routed: /#/jobs, /#/jobs/<id>, /#/submit, /#/datasets)."""
    # no-cache: a new version's page (and so its module URLs) is picked up on the next load
    return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(STATIC_PREFIX + "/{path:path}")
async def static_file(path: str, request: Request) -> Response:
    """A file under api/dashboard (pages' modules, styles, vendored libraries with their licences); 404 otherwise."""
    response = await _files.get_response(path, request.scope)
    response.headers.setdefault("Cache-Control", "no-cache")  # revalidated by ETag, so an upgrade shows at once
    return response


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for /openapi.json, its script, style and icon served by this service rather than a CDN."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
    )
