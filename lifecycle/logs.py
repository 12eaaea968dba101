"""Logging for the long-running processes (worker, web): structlog renders every record.

Our modules and the libraries log through the standard `logging` module; one handler on the
root logger passes each record through structlog's processors and writes one line: JSON
(`[logging] format = "json"`, for production collectors) or a console line for people.

What a line may hold (SPEC §6): never a confidential text, never a link token. Our own
messages carry ids, states and counts only; the last processor masks link tokens in every
line (the web server's access log has the path of every followed link). SQLAlchemy, whose
INFO lines would carry SQL parameters, keeps its own WARNING level whatever the root's is.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

from lifecycle.config import Settings

# An email link's path: /l/<token id>.<signature> (lifecycle.links), or the id alone.
LINK_PATH = re.compile(r"/l/[A-Za-z0-9_-]{1,64}(?:\.[0-9a-f]{1,64})?")
MASKED_LINK = "/l/[token]"


def mask_links(_logger: Any, _method: str, line: str) -> str:
    """Replace link tokens in the rendered line, tracebacks included."""
    return LINK_PATH.sub(MASKED_LINK, line)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is when a record comes: a test or a daemon may swap it."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Route every log record through structlog to `stream` (default: standard error).

    Calling it again replaces the handler it installed before. Returns the handler.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any] = (
        [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ]
        if settings.log_format == "json"
        # Plain tracebacks: the default (rich) one prints each frame's local variables, which
        # may hold a question or an agreement.
        else [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer, mask_links]
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()], processors=final
        )
    )
    handler.set_name("mentorlus")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mentorlus"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # structlog's own loggers end in the same handler.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler
