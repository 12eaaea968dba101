"""The FastAPI application: built from an App, like the CLI and the worker."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from lifecycle.bootstrap import App
from lifecycle.models import LANGUAGES, TOPIC_LABELS
from lifecycle.web import auth

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")


@cache
def texts() -> dict[str, dict[str, dict[str, str]]]:
    return tomllib.loads((HERE / "texts.toml").read_text(encoding="utf-8"))


def language(request: Request) -> str:
    chosen = request.query_params.get("lang")
    if chosen in LANGUAGES:
        request.session["lang"] = chosen
    return str(request.session.get("lang", core(request).settings.language))


def core(request: Request) -> App:
    app: App = request.app.state.core
    return app


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page in the reader's language with what every page needs."""
    lang = language(request)

    def t(key: str) -> str:
        section, _, item = key.partition(".")
        return texts()[section][item][lang]

    return TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "lang": lang,
            "t": t,
            "topics": {name: labels[lang] for name, labels in TOPIC_LABELS.items()},
            "csrf": auth.csrf_token(request),
            "staff": request.session.get("staff_name"),
            **context,
        },
        status_code=status_code,
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def create(core_app: App) -> FastAPI:
    """The web app for one App: pages, links, console, committee view and the JSON API."""
    # Imported here: the routers use this module's page helpers.
    from lifecycle.web import api, console, public
    from lifecycle.web import links as link_pages

    web = FastAPI(
        title="Mentorlus", version="1", openapi_url="/openapi.json", docs_url=None, redoc_url=None
    )
    web.state.core = core_app
    web.add_middleware(
        SessionMiddleware,
        secret_key=core_app.settings.secret_key.decode(),
        session_cookie="mentorlus",
        same_site="lax",
        https_only=core_app.settings.base_url.startswith("https://"),
        max_age=8 * 3600,
    )
    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    web.include_router(public.router)
    web.include_router(link_pages.router)
    web.include_router(console.router)
    web.include_router(api.router)
    return web
