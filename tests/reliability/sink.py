"""The suite's SMTP server, a process of its own so that it can be killed and started again.

`python -m tests.reliability.sink --port P --record FILE` accepts every message and appends
one JSON line per message to FILE before it answers 250: the Message-ID, the recipient,
the subject, the links in the text and the arrival time. The file outlives the process, so
the suite counts every copy that ever arrived, across restarts.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import IO, Any

from aiosmtpd.controller import Controller

LINK = re.compile(r"https?://[^\s/]+(/l/[A-Za-z0-9_.-]+)")


class Recorder:
    """aiosmtpd handler: one line per accepted message, written before the 250 reply."""

    def __init__(self, record: IO[str]) -> None:
        self.record = record

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(
            envelope.original_content or envelope.content, policy=policy.default
        )
        plain = mail.get_body(preferencelist=("plain",))
        text = plain.get_content() if plain is not None else ""
        line = {
            "message_id": str(mail["Message-ID"]),
            "to": envelope.rcpt_tos[0].lower(),
            "subject": str(mail["Subject"]),
            "links": sorted(set(LINK.findall(text))),
            "at": time.time(),
        }
        # One write of a whole line, flushed: a kill after the 250 loses nothing recorded.
        self.record.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.record.flush()
        return "250 2.0.0 OK"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    with args.record.open("a", encoding="utf-8") as record:
        controller = Controller(Recorder(record), hostname="127.0.0.1", port=args.port)
        controller.start()
        print(f"sink listening on {args.port}", flush=True)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        stopped.wait()
        controller.stop()


if __name__ == "__main__":
    main()
