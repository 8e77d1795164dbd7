"""The web pages: the judges' desk (``/``), an event's table (``/meet``), the model's card (``/model``) and the
API docs (``/docs``, ``/redoc``).

Pages are plain HTML, CSS and JavaScript shipped in ``service/static`` (no build step); they work through
the public API with the key the user types. Swagger UI and ReDoc load their scripts from the files the
``fastapi-offline`` package installs, never from a CDN, so every page works at an offline venue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC_URL = "/static"
DOCS_ASSETS_URL = "/docs-assets"
FAVICON = f"{STATIC_URL}/favicon.svg"
LAYOUT = "layout.html"
# Nothing leaves this server: the browser refuses any other host before a request is made (ReDoc's
# sidebar, for one, asks a CDN for its logo). Inline scripts only for Swagger UI's start-up snippet.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
               "style-src 'self' 'unsafe-inline'; frame-src 'self'; object-src 'none'; base-uri 'none'")
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "style-src 'self' 'unsafe-inline'; font-src 'self' data:; worker-src 'self' blob:; object-src 'none'")


@dataclass(frozen=True)
class Page:
    """A page: its own part (``content``, put into the layout's ``<main>``), title and script."""

    content: str
    title: str
    script: str


PAGES = {
    "/": Page("desk.html", "Judges' desk", "desk.js"),
    "/meet": Page("meet.html", "Meet", "meet.js"),
    "/model": Page("model.html", "The model", "model.js"),
}

router = APIRouter(include_in_schema=False)


def render_page(page: Page) -> str:
    """The layout (head, navigation, API key panel) around the page's own part."""
    layout = (STATIC_DIR / LAYOUT).read_text(encoding="utf-8")
    return (layout.replace("<!-- title -->", page.title).replace("<!-- script -->", page.script)
            .replace("<!-- page -->", (STATIC_DIR / page.content).read_text(encoding="utf-8")))


def _serve(page: Page):
    async def serve() -> HTMLResponse:
        return HTMLResponse(render_page(page), headers={"Cache-Control": "no-cache",
                                                        "Content-Security-Policy": PAGE_POLICY})

    return serve


for url, page in PAGES.items():
    router.add_api_route(url, _serve(page), methods=["GET"], response_class=HTMLResponse)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} - API docs",
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=FAVICON,
    )
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} - API reference",
        redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=FAVICON, with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


def install_pages(app: FastAPI) -> None:
    """The pages, their static files and the docs' offline assets. The app is made with docs_url=None."""
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
