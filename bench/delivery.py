"""Benchmark the delivery worker against a relay far away, on loopback, and under faults.

Each sink is an aiosmtpd server in a process of its own on 127.0.0.1 that accepts every
message and counts it by Message-ID. `--messages` emails (default 2,000) are queued with
`outbox.add` on a fresh migrated database (SQLite, or a new database on the server given
by `--postgres URL`) for four applicants, each with one application case, in Estonian and
English. Each run gives every row back to the outbox first and delivers it again:

1. relay, the figure that counts: the sink answers each DATA after `--latency-ms` (default
   50), as a relay tens of milliseconds away does. The worker — `delivery.run(app,
   once=True)` with `smtp_connections=--connections` and `delivery_batch_size=--batch`:
   claiming, rendering, sending and marking every row — and the bare limit — a plain
   aiosmtplib loop sending the same messages, composed beforehand to the exact bytes the
   worker sends, over as many connections — each deliver every message. Beside the rates:
   how long a send took (`*_send_ms`: the latency and a little more, unless a process is
   starved of CPU) and the share of the connections' time spent sending
   (`*_connections_busy`). The last line, `worker_vs_bare_relay` (target ≥ 0.9), says
   whether the worker keeps its connections busy.
2. loopback: the same two against a sink that answers at once (`--sink local`: the
   product's own `mentorlus smtp-sink`), where both are bound by CPU (`worker_vs_bare_loopback`,
   no target), and the naive way, stdlib smtplib opening a connection per message, one
   after another, over `--naive-sample` messages (`worker_vs_naive`, target ≥ 2).
3. faults: the relay sink answers 451 to every fifth message (the first time it comes) and
   drops the connection without an answer at every 500th DATA; the worker, its retries due
   at once, must deliver every message exactly once (counted by Message-ID). Its time is
   printed.
4. with `--workers N` (N ≥ 2, meant with `--postgres`): N worker processes deliver the
   messages together through the relay sink, against the bare loop over all their
   connections; none may arrive twice.

Every sink must receive each message exactly once (checked). Every result is a `key=value`
line on stdout, with CPU milliseconds per message of the sending process and of the sink
(`/proc`), which other load on the machine disturbs far less than the rates. With
`--profile`, the worker runs twice more on loopback: once with its synchronous parts
(claim, render, mark) timed, once under cProfile; both report to stderr. Progress goes to
stderr. docs/performance.md records the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

# Python puts the script's folder first on sys.path, and bench/transitions.py would then
# shadow the `transitions` library that the workflows load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # for bench.common, tests.processes

# The imports below come after the sys.path fix above (ruff allows it).
import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtplib.email import flatten_message
from sqlalchemy import delete, func, select, update

from bench.common import fresh_database, log
from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.config import Settings, load_settings
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


# -- the sinks, each in its own process ----------------------------------------------------

MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Relay:
    """aiosmtpd handler that accepts every message after `latency` seconds and counts it by
    Message-ID. It answers 451 to every `fail_every`-th message the first time it comes (so
    no message is refused for ever, whatever order the retries come in), and reads every
    `drop_every`-th DATA and then drops it with its connection, unanswered and not kept, as
    when a relay crashes."""

    def __init__(self, *, latency: float, fail_every: int, drop_every: int) -> None:
        self.latency = latency
        self.fail_every = fail_every
        self.drop_every = drop_every
        self.data = 0
        self.seen: set[bytes] = set()
        self.failed = 0
        self.dropped = 0
        self.ids: Counter[bytes] = Counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data += 1
        number = self.data
        found = MESSAGE_ID.search(envelope.original_content or envelope.content)
        message_id = found.group(1) if found else b""
        refuse = bool(self.fail_every) and message_id not in self.seen
        self.seen.add(message_id)
        refuse = refuse and len(self.seen) % self.fail_every == 0
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.drop_every and number % self.drop_every == 0:
            self.dropped += 1
            server.transport.close()
            return "421 4.3.0 gone"  # never reaches the client
        if refuse:
            self.failed += 1
            return "451 4.3.0 try again later"
        self.ids[message_id] += 1
        return "250 Message accepted for delivery"


async def serve_relay(latency: float, fail_every: int, drop_every: int) -> None:
    """Run the sink until SIGTERM; print its port first and what it received last."""
    handler = Relay(latency=latency, fail_every=fail_every, drop_every=drop_every)
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
    most = max(handler.ids.values(), default=0)
    print(
        f"received={handler.ids.total()} distinct={len(handler.ids)} most={most} "
        f"failed={handler.failed} dropped={handler.dropped}",
        flush=True,
    )


@dataclass(frozen=True)
class Counted:
    """What a sink received: messages, distinct Message-IDs, the most copies of one, and the
    DATA commands it answered 451 or dropped."""

    received: int
    distinct: int
    most: int
    failed: int = 0
    dropped: int = 0

    def exactly_once(self, messages: int, what: str) -> None:
        assert (self.received, self.distinct, self.most) == (messages, messages, 1), (
            f"{what}: the sink received {self.received} messages, {self.distinct} distinct, "
            f"one of them {self.most} times; expected each of {messages} once"
        )


class Sink:
    """A sink process, seen from the benchmark: the counting relay or the local sink."""

    def __init__(
        self,
        directory: Path,
        *,
        local: bool = False,
        latency_ms: float = 0,
        fail_every: int = 0,
        drop_every: int = 0,
    ) -> None:
        self.local = local
        self.folder = Path(tempfile.mkdtemp(dir=directory, prefix="mail-"))
        self.counted: Counted | None = None
        if not local:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--sink-child",
                    f"--latency-ms={latency_ms}",
                    f"--fail-every={fail_every}",
                    f"--drop-every={drop_every}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.process.stdout is not None
            line = self.process.stdout.readline().strip()
            self.port = int(line.removeprefix("port=")) if line.startswith("port=") else 0
        else:
            self.port = free_port()
            # Its line per message goes to a file: a pipe nobody reads would stop it.
            self.log = self.folder / "smtp-sink.log"
            with self.log.open("w") as output:
                self.process = subprocess.Popen(
                    [MENTORLUS, "smtp-sink", "--dir", str(self.folder), "--port", str(self.port)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            wait_until(
                lambda: "SMTP sink on" in self.log.read_text() or self.process.poll() is not None,
                timeout=30,
                what="the local sink",
            )
        if not self.port or self.process.poll() is not None:
            self.process.kill()
            raise RuntimeError("the sink did not start")
        self.pid = self.process.pid

    def stop(self) -> Counted:
        """Stop the sink; what it received."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        if self.local:
            headers = BytesHeaderParser()
            ids = Counter(
                str(headers.parsebytes(path.read_bytes())["Message-ID"])
                for path in self.folder.glob("*.eml")
            )
            counted = Counted(ids.total(), len(ids), max(ids.values(), default=0))
        else:
            fields = dict(item.split("=") for item in out.strip().splitlines()[-1].split())
            counted = Counted(**{key: int(value) for key, value in fields.items()})
        self.counted = counted
        return counted


@contextmanager
def sink_process(directory: Path, **options: Any) -> Iterator[Sink]:
    """A sink for one way of delivering; what it received is in `.counted` afterwards."""
    sink = Sink(directory, **options)
    try:
        yield sink
    finally:
        sink.stop()


# -- the queue ---------------------------------------------------------------------------------


def bench_settings(url: str, *, port: int, connections: int, batch: int) -> Settings:
    return replace(
        load_settings(environ={}),
        database_url=url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_username="",
        smtp_connections=connections,
        delivery_batch_size=batch,
    )


def make_app(settings: Settings, clock: ManualClock) -> App:
    """The migrated database and the app on it."""
    engine = db.make_engine(settings.database_url)
    db.migrate(engine)
    engine.dispose()
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


def all_sent(app: App, messages: int) -> None:
    """Every row is marked sent; otherwise say what the others are."""
    with app.sessions() as session:
        others = session.execute(
            select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.attempts)
            .add_columns(OutboxMessage.last_error)
            .where(OutboxMessage.status != "sent")
        ).all()
        sent = session.scalar(select(func.count()).where(OutboxMessage.status == "sent"))
    assert (sent, others) == (messages, []), f"{sent} of {messages} sent; not sent: {others[:5]}"


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


# -- 4. several worker processes ---------------------------------------------------------------


def worker_child(args: argparse.Namespace) -> None:
    """One process of the --workers run: deliver what is due once told to begin."""
    settings = bench_settings(
        args.database_url, port=args.port, connections=args.connections, batch=args.batch
    )
    app = bootstrap.build(settings, clock=ManualClock(START))
    print("ready", flush=True)
    sys.stdin.readline()
    began = time.process_time()
    handled = run_worker(app)
    print(f"handled={handled} cpu={time.process_time() - began}", flush=True)


def worker_processes(settings: Settings, *, port: int, count: int) -> tuple[float, float]:
    """`count` worker processes deliver together, started once all are ready: the seconds
    until the last has finished, and the CPU seconds they spent."""
    command = [
        sys.executable,
        __file__,
        "--worker-child",
        f"--database-url={settings.database_url}",
        f"--port={port}",
        f"--connections={settings.smtp_connections}",
        f"--batch={settings.delivery_batch_size}",
    ]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        began = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [child.communicate(timeout=900)[0] for child in children]
        seconds = time.perf_counter() - began
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert all(child.returncode == 0 for child in children), "a worker process failed"
    cpu = sum(float(dict(item.split("=") for item in r.split())["cpu"]) for r in reports)
    return seconds, cpu


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


def report(out: list[str], name: str, measured: Measured, messages: int) -> float:
    """One way's figures; its messages per second."""
    per_s = messages / measured.seconds
    out.append(f"{name}_s={measured.seconds:.2f}")
    out.append(f"{name}_cpu_ms_per_message={measured.cpu / messages * 1000:.3f}")
    out.append(f"{name}_sink_cpu_ms_per_message={measured.sink_cpu / messages * 1000:.3f}")
    out.append(f"{name}_msgs_per_s={per_s:.0f}")
    return per_s


def worker_through(sink: Sink, settings: Settings, clock: ManualClock, messages: int) -> Measured:
    """Every row given back to the outbox, then delivered by the worker to this sink."""
    app = bootstrap.build(replace(settings, smtp_port=sink.port), clock=clock)
    try:
        requeue(app)
        measured = measure(sink, lambda: run_worker(app))
        all_sent(app, messages)
    finally:
        app.engine.dispose()
    return measured


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
    wrapped = [
        (delivery, "claim"),
        (delivery, "mark_all"),
        (mailer, "preload"),
        (mailer, "compose"),
    ]
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
    blocking = sum(spent.values())
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


# -- the runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """What every run shares: the queued messages, their bytes, where to keep sinks' files."""

    args: argparse.Namespace
    settings: Settings
    clock: ManualClock
    directory: Path
    wires: list[Wire]

    @property
    def messages(self) -> int:
        return len(self.wires)


@dataclass
class Sends:
    """How long the SMTP transactions (MAIL, RCPT, DATA) of a run took, together."""

    count: int = 0
    seconds: float = 0.0

    def report(self, out: list[str], name: str, measured: Measured, connections: int) -> None:
        # A send takes the relay's latency and a little more; a send that takes much more
        # means a starved process (the sender's or the sink's), not an idle connection.
        out.append(f"{name}_send_ms={self.seconds / self.count * 1000:.1f}")
        out.append(f"{name}_connections_busy={self.seconds / (connections * measured.seconds):.2f}")


@contextmanager
def timed_sends() -> Iterator[Sends]:
    """Time every aiosmtplib send, the worker's and the bare loop's alike."""
    sends, original = Sends(), aiosmtplib.SMTP.sendmail

    async def sendmail(self: aiosmtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            sends.count += 1
            sends.seconds += time.perf_counter() - began

    aiosmtplib.SMTP.sendmail = sendmail  # type: ignore[method-assign]
    try:
        yield sends
    finally:
        aiosmtplib.SMTP.sendmail = original  # type: ignore[method-assign]


def relay(bench: Bench, out: list[str]) -> None:
    """The worker and the bare loop, each against its own relay sink far away."""
    args, messages, connections = bench.args, bench.messages, bench.args.connections
    log(f"relay ({args.latency_ms:g} ms a DATA): the worker, {connections} connections")
    with sink_process(bench.directory, latency_ms=args.latency_ms) as sink, timed_sends() as ws:
        worker = worker_through(sink, bench.settings, bench.clock, messages)
    assert sink.counted is not None
    sink.counted.exactly_once(messages, "the worker, relay")
    log(f"relay: the bare loop over {connections} connections")
    with sink_process(bench.directory, latency_ms=args.latency_ms) as sink, timed_sends() as bs:
        bare_run = measure(sink, lambda: asyncio.run(bare(sink.port, bench.wires, connections)))
    assert sink.counted is not None
    sink.counted.exactly_once(messages, "the bare loop, relay")
    worker_per_s = report(out, "worker", worker, messages)
    ws.report(out, "worker", worker, connections)
    bare_per_s = report(out, "bare", bare_run, messages)
    bs.report(out, "bare", bare_run, connections)
    out.append(f"worker_vs_bare_relay={worker_per_s / bare_per_s:.2f}")


def loopback(bench: Bench, out: list[str]) -> None:
    """The worker, the bare loop and the naive way against a sink that answers at once."""
    args, messages, connections = bench.args, bench.messages, bench.args.connections
    local = args.sink == "local"
    ways: dict[str, Measured] = {}
    sample = min(messages, args.naive_sample)
    with_crlf = [(wire, wire.crlf) for wire in bench.wires[:sample]]
    sends: dict[str, Callable[[int], object]] = {
        "bare": lambda port: asyncio.run(bare(port, bench.wires, connections)),
        "naive": lambda port: naive(port, with_crlf),
    }
    for way in ("worker", "bare", "naive"):
        log(f"loopback ({args.sink} sink): {way}")
        with sink_process(bench.directory, local=local) as sink:
            if way == "worker":
                ways[way] = worker_through(sink, bench.settings, bench.clock, messages)
            else:
                ways[way] = measure(sink, functools.partial(sends[way], sink.port))
        assert sink.counted is not None
        sink.counted.exactly_once(sample if way == "naive" else messages, f"{way}, loopback")
    out.append(f"loopback_sink={args.sink}")
    worker_per_s = report(out, "loopback_worker", ways["worker"], messages)
    bare_per_s = report(out, "loopback_bare", ways["bare"], messages)
    naive_per_s = report(out, "loopback_naive", ways["naive"], sample)
    out.append(f"worker_vs_bare_loopback={worker_per_s / bare_per_s:.2f}")
    out.append(f"worker_vs_naive={worker_per_s / naive_per_s:.2f}")


def faults(bench: Bench, out: list[str]) -> None:
    """The worker against a relay that refuses every fifth message and drops every 500th."""
    messages = bench.messages
    log("faults: 451 to every fifth message, the connection dropped at every 500th")
    # A retry is due at once: the benchmark measures retrying, not waiting for it.
    settings = replace(bench.settings, delivery_backoff_base=timedelta(0))
    with sink_process(
        bench.directory, latency_ms=bench.args.latency_ms, fail_every=5, drop_every=500
    ) as sink:
        run = worker_through(sink, settings, bench.clock, messages)
    counted = sink.counted
    assert counted is not None
    counted.exactly_once(messages, "the worker, faults")
    out.append(f"fault_answered_451={counted.failed}")
    out.append(f"fault_dropped={counted.dropped}")
    out.append(f"fault_arrived_once={counted.distinct}")
    out.append(f"fault_s={run.seconds:.2f}")
    out.append(f"fault_msgs_per_s={messages / run.seconds:.0f}")


def several_workers(bench: Bench, out: list[str]) -> None:
    """`--workers` processes together through the relay, against the bare loop over all
    their connections."""
    args, messages = bench.args, bench.messages
    connections = args.workers * args.connections
    log(f"workers: {args.workers} processes, {args.connections} connections each, relay")
    app = bootstrap.build(bench.settings, clock=bench.clock)
    try:
        requeue(app)
        with sink_process(bench.directory, latency_ms=args.latency_ms) as sink:
            seconds, cpu = worker_processes(bench.settings, port=sink.port, count=args.workers)
        all_sent(app, messages)
    finally:
        app.engine.dispose()
    assert sink.counted is not None
    sink.counted.exactly_once(messages, f"{args.workers} workers, relay")
    log(f"workers: the bare loop over {connections} connections")
    with sink_process(bench.directory, latency_ms=args.latency_ms) as sink:
        bare_run = measure(sink, lambda: asyncio.run(bare(sink.port, bench.wires, connections)))
    workers_per_s = messages / seconds
    out.append(f"workers={args.workers}")
    out.append(f"workers_arrived_once={sink.counted.distinct if sink.counted else 0}")
    out.append(f"workers_s={seconds:.2f}")
    out.append(f"workers_cpu_ms_per_message={cpu / messages * 1000:.3f}")
    out.append(f"workers_msgs_per_s={workers_per_s:.0f}")
    bare_per_s = report(out, "workers_bare", bare_run, messages)
    out.append(f"workers_vs_bare_relay={workers_per_s / bare_per_s:.2f}")


def profiled(bench: Bench) -> None:
    """The worker twice more on loopback: its parts timed, then under cProfile."""
    messages, top = bench.messages, bench.args.top
    looks: list[Callable[[App], None]] = [
        lambda app: breakdown(app, messages),
        lambda app: profile_worker(app, messages, top),
    ]
    for look in looks:
        with sink_process(bench.directory, local=bench.args.sink == "local") as sink:
            app = bootstrap.build(replace(bench.settings, smtp_port=sink.port), clock=bench.clock)
            try:
                requeue(app)
                look(app)
            finally:
                app.engine.dispose()


# -- main --------------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000, help="emails queued")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections")
    parser.add_argument("--batch", type=int, default=200, help="worker's delivery_batch_size")
    parser.add_argument(
        "--latency-ms", type=float, default=50, help="how long the relay takes to answer DATA"
    )
    parser.add_argument("--naive-sample", type=int, default=2_000, help="messages sent naively")
    parser.add_argument(
        "--sink",
        choices=("count", "local"),
        default="count",
        help="loopback: count, a server that only counts; local: `mentorlus smtp-sink`",
    )
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to run on instead")
    parser.add_argument(
        "--workers", type=int, default=1, help="from 2: that many worker processes as well"
    )
    parser.add_argument("--profile", action="store_true", help="show where the worker's time goes")
    parser.add_argument("--top", type=int, default=30, help="functions in the profile")
    for child in ("--sink-child", "--worker-child"):
        parser.add_argument(child, action="store_true", help=argparse.SUPPRESS)
    for number in ("--fail-every", "--drop-every", "--port"):
        parser.add_argument(number, type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.sink_child:
        asyncio.run(serve_relay(args.latency_ms / 1000, args.fail_every, args.drop_every))
        return
    if args.worker_child:
        worker_child(args)
        return

    load_before = os.getloadavg()[0]
    clock = ManualClock(START)
    out: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="mentorlus-bench-") as name,
        fresh_database(Path(name), args.postgres, "delivery") as url,
    ):
        settings = bench_settings(url, port=0, connections=args.connections, batch=args.batch)
        app = make_app(settings, clock)
        try:
            readers = seed(app)
            log(f"queue: {args.messages} emails for {len(readers)} readers")
            queue(app, readers, args.messages, round_=1)
            log("prerender: composing every message (not timed)")
            wires = prerender(app)
        finally:
            app.engine.dispose()
        bench = Bench(args, settings, clock, Path(name), wires)
        loopback(bench, out)
        faults(bench, out)
        if args.workers > 1:
            several_workers(bench, out)
        if args.profile:
            profiled(bench)
        relay(bench, out)  # last: its ratio is the last line

    size = sum(len(wire.content) for wire in wires) / len(wires)
    print(f"messages={args.messages}")
    print(f"connections={args.connections}")
    print(f"batch_size={args.batch}")
    print(f"latency_ms={args.latency_ms:g}")
    print(f"database={'postgresql' if args.postgres else 'sqlite'}")
    print(f"message_bytes={size:.0f}")
    # Other work on the machine slows every figure: the load average tells how busy it was.
    print(f"load_average_1m={load_before:.2f}/{os.getloadavg()[0]:.2f}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
