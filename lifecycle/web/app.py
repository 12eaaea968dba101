"""The FastAPI application: built from an App, like the CLI and the worker."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifecycle.bootstrap import App
from lifecycle.store import db
from lifecycle.web import (
    api,
    api_public,
    auth,
    committee,
    confirm,
    console,
    console_admin,
    console_reports,
    link_steps,
    public,
)
from lifecycle.web import links as link_pages
from lifecycle.web.headers import SecurityHeaders
from lifecycle.web.pages import page

HERE = Path(__file__).parent
log = logging.getLogger(__name__)
# The largest request body taken: the longest form, an application, is a few KB even
# percent-encoded; anything near this is not a person typing.
MAX_BODY = 256 * 1024


class InputGuard:
    """Refuse, before any route reads it, input no field could take: a body over MAX_BODY
    bytes (413), and a query string or form holding NUL (no text column stores it) or
    percent-encoded bytes that are not UTF-8 (Starlette would quietly make them U+FFFD), 400.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more and len(body) <= MAX_BODY:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
        problem = _input_problem(scope, body)
        if problem is not None:
            status, detail = problem
            await JSONResponse({"detail": detail}, status)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ServerErrorPage:
    """An unexpected error answered as a page in the reader's language (JSON under /api/),
    with the session and the security headers of every answer. The error still goes up, so
    the server logs it and a test sees it; the step's transaction was rolled back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if not started:  # a half-sent answer cannot be replaced
                request = Request(scope, receive)
                if request.url.path.startswith("/api/"):
                    detail = "an unexpected error; nothing was changed"
                    answer: Response = JSONResponse({"detail": detail}, status_code=500)
                else:
                    answer = error_page(request, 500)
                await answer(scope, receive, send)
            raise


def _input_problem(scope: Scope, body: bytes) -> tuple[int, str] | None:
    if len(body) > MAX_BODY:
        return 413, f"the request is too large: at most {MAX_BODY // 1024} KB"
    content_type = Headers(scope=scope).get("content-type", "")
    encoded = [("the URL", bytes(scope["query_string"]))]
    if content_type.startswith("application/x-www-form-urlencoded"):
        encoded.append(("the form", body))
    for where, raw in encoded:
        try:
            pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            return 400, f"{where} holds text that is not valid UTF-8"
        if any("\x00" in name + value for name, value in pairs):
            return 400, f"{where} holds a NUL character"
    if content_type.startswith("multipart/form-data") and b"\x00" in body:
        return 400, "the form holds a NUL character"  # the site takes no files
    return None


# What a person is told for each refusal outside /api/; the detail is for the API's callers.
ERROR_KINDS = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "not_allowed",
    422: "bad_request",
    500: "server_error",
}


def error_page(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    """The refusal as a page in the reader's language, with a way back."""
    answer = page(
        request,
        "error.html",
        status_code=status,
        status=status,
        kind=ERROR_KINDS.get(status, "other"),
        console=request.url.path.startswith(("/console", "/committee")),
    )
    answer.headers.update(headers or {})
    return answer


async def http_error(request: Request, error: Exception) -> Response:
    """A page for people, FastAPI's JSON for the API and for redirects (which keep their
    Location)."""
    assert isinstance(error, HTTPException)
    if request.url.path.startswith("/api/") or error.status_code < 400:
        return await http_exception_handler(request, error)
    return error_page(request, error.status_code, dict(error.headers or {}))


async def invalid_request(request: Request, error: Exception) -> Response:
    """422 naming each field and the problem, without FastAPI's echo of the input: that may
    be huge, or not even encodable as JSON (a lone surrogate, an infinite number). A page
    outside /api/: the forms send what their fields hold, so this is a tampered or stale one."""
    assert isinstance(error, RequestValidationError)
    if not request.url.path.startswith("/api/"):
        return error_page(request, 422)
    detail = [
        {
            "loc": [
                part if isinstance(part, int) else str(part).encode(errors="replace").decode()
                for part in problem["loc"]
            ],
            "msg": problem["msg"],
            "type": problem["type"],
        }
        for problem in error.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def database_unavailable(request: Request, error: Exception) -> Response:
    """503 with the cause: the transaction was rolled back, so nothing is half-made."""
    assert isinstance(error, db.UNAVAILABLE)
    log.warning("%s %s: %s", request.method, request.url.path, db.unavailable_reason(error))
    headers = {"Retry-After": "60"}
    if request.url.path.startswith("/api/"):
        detail = f"{db.unavailable_reason(error)}; nothing was changed, try again shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers=headers)
    auth.staff_unread(request)
    answer = page(request, "unavailable.html", status_code=503, cause=db.unavailable_cause(error))
    answer.headers.update(headers)
    return answer


def create(core_app: App) -> FastAPI:
    """The web app for one App: pages, links, console, committee view and the JSON API."""
    web = FastAPI(
        title="Mentorlus", version="1", openapi_url="/openapi.json", docs_url=None, redoc_url=None
    )
    web.state.core = core_app
    # Added first, so it runs inside the session: its page is in the reader's language.
    web.add_middleware(ServerErrorPage)
    web.add_middleware(
        SessionMiddleware,
        secret_key=core_app.settings.secret_key.decode(),
        session_cookie="mentorlus",
        same_site="lax",
        https_only=core_app.settings.base_url.startswith("https://"),
        # The staff session's own row decides when it ends; the cookie only must not end first.
        max_age=int(core_app.settings.staff_session_max.total_seconds()),
    )
    web.add_middleware(InputGuard)
    # Added last, so it runs first: even a body refused by InputGuard carries the headers.
    web.add_middleware(SecurityHeaders, https=core_app.settings.base_url.startswith("https://"))
    web.add_exception_handler(RequestValidationError, invalid_request)
    web.add_exception_handler(HTTPException, http_error)
    for unavailable in db.UNAVAILABLE:
        web.add_exception_handler(unavailable, database_unavailable)
    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    web.include_router(public.router)
    web.include_router(link_pages.router)
    web.include_router(link_steps.router)
    web.include_router(confirm.router)
    web.include_router(console.router)
    web.include_router(committee.router)
    web.include_router(console_admin.router)
    web.include_router(console_reports.router)
    web.include_router(api.router)
    web.include_router(api_public.router)
    return web
