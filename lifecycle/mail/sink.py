"""A local SMTP sink (aiosmtpd): every message it receives is kept as an .eml file."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SaveToFolder:
    """aiosmtpd handler: write each message to `folder` and print a one-line summary."""

    def __init__(self, folder: Path, *, echo: bool = True) -> None:
        self.folder = folder
        self.echo = echo
        self.counter = itertools.count(1)
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.content
        stamp = datetime.now(UTC)
        path = self.folder / f"{stamp:%Y%m%dT%H%M%S}-{next(self.counter):06d}.eml"
        path.write_bytes(content)
        if self.echo:
            subject = subject_of(content)
            print(
                f"{stamp:%H:%M:%S} {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)}: "
                f"{subject}  [{path.name}]",
                flush=True,
            )
        return "250 Message accepted for delivery"


# The headers only, as they are: parsing whole messages with the default policy cost ~1 ms
# each, more than receiving them.
_HEADERS = BytesHeaderParser(policy=compat32)


def subject_of(content: bytes) -> str:
    """The message's subject, its encoded words decoded; as written if they cannot be."""
    raw = str(_HEADERS.parsebytes(content)["Subject"] or "")
    try:
        return str(make_header(decode_header(raw)))
    except (HeaderParseError, LookupError, UnicodeError):
        return raw


def start(folder: Path, *, host: str, port: int, echo: bool = True) -> Controller:
    """Start the sink in a background thread; stop it with .stop()."""
    controller = Controller(SaveToFolder(folder, echo=echo), hostname=host, port=port)
    controller.start()
    return controller
