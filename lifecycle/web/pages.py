"""What every page needs: the app behind the request, the reader's language, the catalogue's
texts, rendering a template and the redirect after a POST. The routers import it; app.py only
assembles them."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from lifecycle.bootstrap import App
from lifecycle.errors import InvalidInput, Refused
from lifecycle.store.models import LANGUAGES, REGION_LABELS, TOPIC_LABELS
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
    staff = auth.staff_member(request)

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
            "region_names": {name: labels[lang] for name, labels in REGION_LABELS.items()},
            "csrf": auth.csrf_token(request),
            "staff": staff.name if staff is not None else None,
            **context,
        },
        status_code=status_code,
    )


def field_errors(
    request: Request, error: InvalidInput, name: Callable[[str], str] = str
) -> dict[str, str]:
    """Each refused field's message in the reader's language, by the form field `name` gives
    for it; the first problem of a field is the one shown beside it."""
    lang = language(request)
    said = texts()["invalid"]
    shown: dict[str, str] = {}
    for problem in error.problems:
        wording = said.get(problem.rule, said["invalid"])[lang]
        # Grouped from five digits: a year (1950) reads as it is written.
        numbers = {
            key: format_decimal(value, locale=lang, group_separator=abs(value) >= 10_000)
            for key, value in problem.params.items()
        }
        shown.setdefault(name(problem.field), wording.format(**numbers))
    return shown


def refusal_text(request: Request, error: Refused) -> str:
    """Why the service refused, in the reader's language, by the rule that refused it."""
    said = texts()["refusal"]
    return said.get(error.rule, said["other"])[language(request)]


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
