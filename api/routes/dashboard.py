"""The web dashboard at `/` and its static files at `/static/...`; `/docs` with Swagger UI served from here.

Everything the browser loads comes from this service (the files in api/dashboard, vendored libraries included),
so the dashboard and /docs work offline. The pages are public; their data calls go to /v1 with the user's key.

Every response here carries api/security.py's headers (as every response of the service does): a
Content-Security-Policy that lets a page load and connect to this origin only (no inline or eval'd script anywhere,
/docs included: its start-up script is the static docs.js), no framing, no MIME sniffing and no Referer.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from starlette.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
STATIC_PREFIX = "/static"
SWAGGER = f"{STATIC_PREFIX}/vendor/swagger-ui"

router = APIRouter(include_in_schema=False)
# StaticFiles resolves paths inside DASHBOARD_DIR only (no `..`, no absolute paths) and answers ETag and
# Last-Modified, and HEAD; a missing file is a 404.
_files = StaticFiles(directory=DASHBOARD_DIR)


@router.api_route("/", methods=["GET", "HEAD"])
def index() -> FileResponse:
    """The single-page dashboard (hash-routed: /#/jobs, /#/jobs/<id>, /#/submit, /#/datasets, /#/studies[/<id>])."""
    # no-cache: a new version's page (and so its module URLs) is picked up on the next load
    return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.api_route(STATIC_PREFIX + "/{path:path}", methods=["GET", "HEAD"])
async def static_file(path: str, request: Request) -> Response:
    """A file under api/dashboard (pages' modules, styles, vendored libraries with their licences); 404 otherwise."""
    response = await _files.get_response(path, request.scope)
    response.headers.setdefault("Cache-Control", "no-cache")  # revalidated by ETag, so an upgrade shows at once
    return response


@router.api_route("/docs", methods=["GET", "HEAD"])
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for /openapi.json, its script, style and icon served by this service rather than a CDN.

    The page is FastAPI's Swagger UI page with its inline start-up script moved to /static/docs.js (so the CSP
    needs no inline script); the schema's URL travels in the `data-openapi-url` attribute.
    """
    openapi_url = escape(request.app.openapi_url or "/openapi.json")
    title = escape(f"{request.app.title} - API docs")
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{SWAGGER}/swagger-ui.css">
<link rel="icon" href="{SWAGGER}/favicon-32x32.png">
<title>{title}</title>
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{SWAGGER}/swagger-ui-bundle.js"></script>
<script src="{STATIC_PREFIX}/docs.js"></script>
</body>
</html>
"""
    return HTMLResponse(page)
