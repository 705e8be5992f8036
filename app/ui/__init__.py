"""The dashboard at /ui: static files that ship in this package, nothing rendered per request.

The page is plain HTML, CSS and JavaScript modules (no build step, no CDN: the machine may be
offline). It calls only the public /v1 API, with the key the user typed (kept in the browser
session), so everything it shows and does, any other client can show and do too. This module
only serves the files: the same page for every path under /ui (the page routes itself), and
the assets under /ui/assets.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

HERE = Path(__file__).resolve().parent
# The page loads nothing from elsewhere and runs no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class Assets(StaticFiles):
    """Static files that the browser revalidates (ETag) before use: no stale script after an upgrade."""

    async def get_response(self, path: str, scope: Scope):  # noqa: ANN201
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def page(request: Request) -> HTMLResponse:
    # <base> makes every URL of the page relative to /ui/ under whatever prefix the app is mounted.
    base = f"{request.scope.get('root_path', '').rstrip('/')}/ui/"
    html = (HERE / "index.html").read_text(encoding="utf-8").replace("%BASE%", base)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})


def install(app: FastAPI) -> None:
    app.mount("/ui/assets", Assets(directory=HERE / "assets"), name="ui-assets")

    @app.get("/ui", include_in_schema=False)
    async def ui_root(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/ui/")

    @app.get("/ui/{path:path}", include_in_schema=False)
    async def ui_page(request: Request, path: str) -> HTMLResponse:  # noqa: ARG001
        return page(request)
