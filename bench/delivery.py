"""Benchmark the delivery worker against the SMTP limit and against the naive way.

An aiosmtpd sink runs in a separate process on 127.0.0.1: by default a handler that only
counts messages, the cheapest a server can be and so the strictest ceiling for the bare
loop; `--sink local` runs the product's own local sink instead (`mentorlus smtp-sink`,
which keeps each message as an .eml file and prints a line for it). On a fresh migrated
SQLite file the benchmark queues `--messages` emails (default 10,000) with `outbox.add`,
for a few applicants with one application case each, in Estonian and English.
It then measures three ways of delivering the same messages to the sink:

1. the worker: `delivery.run(app, once=True)` with `smtp_connections=--connections` and
   `delivery_batch_size=--batch`: claiming, rendering, sending and marking every row
   (`worker_per_s`);
2. the limit: a bare aiosmtplib loop sending the same messages, rendered beforehand (not
   timed) to the exact bytes the worker sends, over as many connections (`bare_per_s`);
3. the naive way: stdlib smtplib opening one connection per message, one after another,
   over a sample of `--naive-sample` messages (`naive_per_s`).

With `--profile`, the messages are queued again and the worker runs twice more: once with
its synchronous parts (claim, render, mark) timed, once under cProfile; both report to
stderr where the time goes (the figures on stdout come from the first, plain run).

Every result is a `key=value` line on stdout; the last two are `worker_vs_bare=<ratio>`
(target ≥ 0.8) and `worker_vs_naive=<ratio>` (target ≥ 2). Progress goes to stderr.
docs/performance.md records a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import re
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Python puts the script's folder first on sys.path, and bench/transitions.py would then
# shadow the `transitions` library that the workflows load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # for tests.processes

# The imports below come after the sys.path fix above (ruff allows it).
import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtplib.email import flatten_message
from sqlalchemy import delete, func, select, update

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import delivery, mailer
from lifecycle.store import db
from lifecycle.store.models import Application, OutboxMessage, Person
from lifecycle.workflows import outbox
from tests.processes import free_port, wait_until

START = datetime(2026, 9, 1, 7, 0, tzinfo=UTC)
MENTORLUS = Path(sys.executable).parent / "mentorlus"
COORDINATOR = "koordinaator@bench.example"
APPLICANTS = [
    ("kandidaat1@bench.example", "Kadri Kask", "et"),
    ("kandidaat2@bench.example", "Jüri Õunapuu", "et"),
    ("applicant3@bench.example", "Anna Smith", "en"),
    ("applicant4@bench.example", "Mark Jones", "en"),
]
TEMPLATE = "application_received"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the sink, in its own process --------------------------------------------------------------


class CountOnly:
    """aiosmtpd handler that accepts every message and only counts it."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 Message accepted for delivery"


async def serve_count_only() -> None:
    """Run the counting sink until SIGTERM; print its port first and how many it received last."""
    handler = CountOnly()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(handler, hostname="bench-sink", enable_SMTPUTF8=True),
        host="127.0.0.1",
        port=0,
    )
    print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    server.close()
    print(f"received={handler.received}", flush=True)


class Sink:
    """The sink process, seen from the benchmark."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.folder = directory / "mail"
        if kind == "count":
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--sink-child"], stdout=subprocess.PIPE, text=True
            )
            assert self.process.stdout is not None
            line = self.process.stdout.readline().strip()
            self.port = int(line.removeprefix("port=")) if line.startswith("port=") else 0
        else:
            self.port = free_port()
            # Its line per message goes to a file: a pipe nobody reads would stop it.
            self.log = directory / "smtp-sink.log"
            with self.log.open("w") as output:
                self.process = subprocess.Popen(
                    [MENTORLUS, "smtp-sink", "--dir", str(self.folder), "--port", str(self.port)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            wait_until(
                lambda: "SMTP sink on" in self.log.read_text() or self.process.poll() is not None,
                timeout=30,
                what="the local sink",
            )
        if not self.port or self.process.poll() is not None:
            self.process.kill()
            raise RuntimeError(f"the {kind} sink did not start")
        self.pid = self.process.pid

    def stop(self) -> int:
        """Stop the sink; how many messages it received."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        if self.kind == "count":
            return int(out.strip().rpartition("received=")[2])
        return sum(1 for _ in self.folder.glob("*.eml"))


# -- the queue ---------------------------------------------------------------------------------


def make_app(directory: Path, clock: ManualClock, *, port: int, args: argparse.Namespace) -> App:
    """A migrated SQLite file and the app on it, sending to the sink."""
    url = f"sqlite:///{directory / 'bench.db'}"
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    settings = replace(
        load_settings(environ={}),
        database_url=url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_username="",
        smtp_connections=args.connections,
        delivery_batch_size=args.batch,
    )
    return bootstrap.build(settings, clock=clock)


def seed(app: App) -> list[tuple[Person, int]]:
    """A coordinator and a few applicants, each with a submitted application case."""
    scenarios.add_staff(app, name="Koordinaator", email=COORDINATOR, role="coordinator")
    for email, name, language in APPLICANTS:
        data = scenarios.applicant(email, name, language=language)
        scenarios.submit_application(app, data, actor=COORDINATOR)
    with app.unit() as tx:
        # The emails the submissions queued are not part of the benchmark.
        tx.session.execute(delete(OutboxMessage))
        rows = tx.session.execute(
            select(Person, Application.case_id)
            .join(Application, Application.person_id == Person.id)
            .order_by(Person.id)
        ).all()
        return [(person, case_id) for person, case_id in rows]


def queue(app: App, readers: list[tuple[Person, int]], count: int, *, round_: int) -> None:
    """`count` outbox rows with distinct keys, the readers taking turns."""
    with app.unit() as tx:
        for index in range(count):
            person, case_id = readers[index % len(readers)]
            outbox.add(
                tx.session,
                app.settings,
                key=f"bench:{round_}:{index}",
                template=TEMPLATE,
                person=person,
                now=tx.now,
                case_id=case_id,
            )


def requeue(app: App) -> None:
    """Every row back to pending, as if never sent."""
    with app.unit() as tx:
        tx.session.execute(
            update(OutboxMessage).values(
                status="pending", attempts=0, sent_at=None, lease_until=None, next_attempt_at=tx.now
            )
        )


@dataclass(frozen=True)
class Wire:
    """One message as it goes over SMTP."""

    sender: str
    recipient: str
    content: bytes

    @property
    def crlf(self) -> bytes:
        """The content with CRLF line ends: stdlib smtplib sends bytes as they are."""
        return re.sub(rb"\r?\n", b"\r\n", self.content)

    @property
    def options(self) -> list[str]:
        """What the worker's send declares: 8BITMIME only for 8-bit content."""
        return [] if self.content.isascii() else ["BODY=8BITMIME"]


def prerender(app: App) -> list[Wire]:
    """Every queued message, composed and flattened exactly as the worker sends it."""
    wires = []
    with app.sessions() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        for message in rows:
            mail: Any = mailer.compose(session, app.settings, message)
            # compose() gives the bytes the worker sends (or, in older versions, an
            # EmailMessage that aiosmtplib flattens like this).
            content = mail if isinstance(mail, bytes) else flatten_message(mail)
            wires.append(Wire(app.settings.from_address, message.to_email, content))
    return wires


def count_status(app: App, status: str) -> int:
    with app.sessions() as session:
        return session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == status)
        )


# -- 1. the worker -----------------------------------------------------------------------------


def run_worker(app: App) -> int:
    return asyncio.run(delivery.run(app, once=True))


# -- 2. the limit: bare aiosmtplib over reused connections ------------------------------------


async def bare(port: int, wires: list[Wire], connections: int) -> None:
    """Send every message over `connections` reused connections."""
    pending: asyncio.Queue[Wire] = asyncio.Queue()
    for wire in wires:
        pending.put_nowait(wire)

    async def drain() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await smtp.connect()
        while not pending.empty():
            wire = pending.get_nowait()
            await smtp.sendmail(
                wire.sender, [wire.recipient], wire.content, mail_options=wire.options
            )
        await smtp.quit()

    await asyncio.gather(*(drain() for _ in range(connections)))


# -- 3. the naive way: smtplib, a connection per message ---------------------------------------


def naive(port: int, wires: list[tuple[Wire, bytes]]) -> None:
    for wire, content in wires:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail(wire.sender, [wire.recipient], content, mail_options=wire.options)


# -- measuring --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measured:
    seconds: float  # wall clock
    cpu: float  # this process: the worker or the client
    sink_cpu: float  # the sink process


def measure(sink: Sink, work: Callable[[], Any]) -> Measured:
    began, cpu, sink_cpu = time.perf_counter(), time.process_time(), cpu_seconds(sink.pid)
    work()
    return Measured(
        time.perf_counter() - began,
        time.process_time() - cpu,
        cpu_seconds(sink.pid) - sink_cpu,
    )


def report(name: str, measured: Measured, messages: int) -> float:
    """Print one way's figures; its messages per second."""
    per_s = messages / measured.seconds
    print(f"{name}_messages={messages}")
    print(f"{name}_s={measured.seconds:.2f}")
    print(f"{name}_cpu_ms_per_message={measured.cpu / messages * 1000:.3f}")
    print(f"{name}_sink_cpu_ms_per_message={measured.sink_cpu / messages * 1000:.3f}")
    print(f"{name}_per_s={per_s:.0f}")
    return per_s


# -- where the worker's time goes ---------------------------------------------------------------


def timed_calls(spent: dict[str, float], name: str, function: Callable[..., Any]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - began

    return wrapper


def breakdown(app: App, messages: int) -> None:
    """Run the worker again with its synchronous parts timed; print where the time went."""
    # The worker calls these through their modules. Each is synchronous and blocks the
    # event loop for its whole length, so the rest of the run is SMTP and waiting for it.
    wrapped = [(delivery, name) for name in ("claim", "render", "mark") if hasattr(delivery, name)]
    wrapped.append((mailer, "compose"))
    originals = [getattr(module, name) for module, name in wrapped]
    spent = {name: 0.0 for _, name in wrapped}
    for module, name in wrapped:
        setattr(module, name, timed_calls(spent, name, getattr(module, name)))
    try:
        began = time.perf_counter()
        handled = run_worker(app)
        seconds = time.perf_counter() - began
    finally:
        for (module, name), original in zip(wrapped, originals, strict=True):
            setattr(module, name, original)
    assert handled == messages, (handled, messages)
    log(f"breakdown: {handled} messages in {seconds:.1f} s ({handled / seconds:.0f}/s)")
    blocking = sum(value for name, value in spent.items() if name != "compose")
    for name, value in [*spent.items(), ("rest (SMTP, event loop)", seconds - blocking)]:
        share = value / seconds * 100
        log(f"  {name}: {value / handled * 1000:.3f} ms per message, {share:.0f} % of the time")


def profile_worker(app: App, messages: int, top: int) -> None:
    """Run the worker again under cProfile; print the functions that took the most time."""
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    handled = run_worker(app)
    profiler.disable()
    assert handled == messages, (handled, messages)
    log(f"profile: {handled} messages in {time.perf_counter() - began:.1f} s under cProfile")
    report = io.StringIO()
    stats = pstats.Stats(profiler, stream=report)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    log(report.getvalue())


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="emails queued")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections")
    parser.add_argument("--batch", type=int, default=200, help="worker's delivery_batch_size")
    parser.add_argument("--naive-sample", type=int, default=2_000, help="messages sent naively")
    parser.add_argument(
        "--sink",
        choices=("count", "local"),
        default="count",
        help="count: a server that only counts; local: `mentorlus smtp-sink`",
    )
    parser.add_argument("--profile", action="store_true", help="show where the worker's time goes")
    parser.add_argument("--top", type=int, default=30, help="functions in the profile")
    parser.add_argument("--sink-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink_child:
        asyncio.run(serve_count_only())
        return

    messages, connections = args.messages, args.connections
    load_before = os.getloadavg()[0]
    sample = min(messages, args.naive_sample)
    with tempfile.TemporaryDirectory(prefix="mentorlus-bench-") as directory:
        sink = Sink(args.sink, Path(directory))
        try:
            clock = ManualClock(START)
            app = make_app(Path(directory), clock, port=sink.port, args=args)
            readers = seed(app)
            log(f"queue: {messages} emails for {len(readers)} readers")
            queue(app, readers, messages, round_=1)
            log("prerender: composing every message (not timed)")
            wires = prerender(app)
            size = sum(len(wire.content) for wire in wires) / len(wires)

            log(f"worker: {connections} connections, batches of {args.batch}")
            handled: list[int] = []
            worker = measure(sink, lambda: handled.append(run_worker(app)))
            sent = count_status(app, "sent")
            assert handled == [messages] and sent == messages, (handled, sent, messages)

            log(f"bare: aiosmtplib over {connections} connections")
            bare_run = measure(sink, lambda: asyncio.run(bare(sink.port, wires, connections)))

            log(f"naive: smtplib, a connection per message, {sample} messages")
            with_crlf = [(wire, wire.crlf) for wire in wires[:sample]]
            naive_run = measure(sink, lambda: naive(sink.port, with_crlf))

            expected = 2 * messages + sample
            if args.profile:
                requeue(app)
                breakdown(app, messages)
                requeue(app)
                profile_worker(app, messages, args.top)
                expected += 2 * messages
            app.engine.dispose()
        finally:
            received = sink.stop()
    assert received == expected, f"the sink received {received} messages, expected {expected}"

    print(f"messages={messages}")
    print(f"connections={connections}")
    print(f"batch_size={args.batch}")
    print(f"sink={args.sink}")
    print(f"message_bytes={size:.0f}")
    print(f"sink_received={received}")
    # Other work on the machine slows every figure: the load average tells how busy it was.
    print(f"load_average_1m={load_before:.2f}/{os.getloadavg()[0]:.2f}")
    worker_per_s = report("worker", worker, messages)
    bare_per_s = report("bare", bare_run, messages)
    naive_per_s = report("naive", naive_run, sample)
    print(f"worker_vs_bare={worker_per_s / bare_per_s:.2f}")
    print(f"worker_vs_naive={worker_per_s / naive_per_s:.2f}")


if __name__ == "__main__":
    main()
