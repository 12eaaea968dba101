"""The console's reports: the tables and charts on a page, and each table as CSV."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.reports import disclosure
from lifecycle.reports import tables as reports
from lifecycle.reports.charts import report_charts
from lifecycle.store.models import TOPIC_LABELS
from lifecycle.web.console import staff
from lifecycle.web.pages import core, language, page, texts

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request) -> HTMLResponse:
    """Counts, medians and means only, small groups hidden (lifecycle.reports)."""
    staff(request, "coordinator")
    app = core(request)
    with app.read() as tx:
        tables = {name: reports.build(tx, name) for name in reports.REPORTS}
        figures = reports.summary(tx)
    labels = _report_labels(request)
    waiting = {s.name for w in app.workflows.values() for s in w.states.values() if s.action}
    return page(
        request,
        "console/reports.html",
        tables=tables,
        figures=figures,
        labels=labels,
        charts=report_charts(tables, labels, waiting=waiting),
        minimum=app.settings.report_min_group_size,
    )


@router.get("/reports/{name}.csv")
def report_csv(request: Request, name: str) -> Response:
    staff(request, "coordinator")
    if name not in reports.REPORTS:
        raise HTTPException(status_code=404, detail="no such report")
    with core(request).read() as tx:
        table = reports.build(tx, name)
    return Response(
        disclosure.to_csv(table),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="mentorlus-{name}.csv"'},
    )


def _report_labels(request: Request) -> dict[str, str]:
    """Words for the reports' keys: workflow, state and topic labels, then the page's own."""
    lang, workflows = language(request), core(request).workflows
    labels = {name: workflow.label[lang] for name, workflow in workflows.items()}
    for workflow in workflows.values():
        labels |= {name: state.label[lang] for name, state in workflow.states.items()}
    labels |= {topic: words[lang] for topic, words in TOPIC_LABELS.items()}
    return labels | {key: words[lang] for key, words in texts()["reports"].items()}
