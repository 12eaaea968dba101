"""Delivery through a real Postfix on loopback, relaying to an aiosmtpd sink.

Each test starts a private Postfix instance (Debian's `postfix` package) with its own
configuration and queue under a temporary directory: it listens on a high loopback port and
relays everything to the sink. The delivery worker sends the outbox to Postfix; Postfix's
own queue, retries and back-off carry the messages on to the sink, which at first refuses
them or is not running at all. Every message must arrive exactly once with the Message-ID
the outbox gave it.

Without Postfix (or without root, which `postfix start` needs) the tests skip — except
under CI=true, where they fail: `.ci/run` installs the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from lifecycle.bootstrap import App
from lifecycle.config import Settings
from lifecycle.mail import delivery
from tests.processes import ReservedPort, logs_on_failure, run_logged, wait_until
from tests.test_delivery import count_status, outbox_rows, queue_bulk

POSTFIX = Path("/usr/sbin/postfix")
POSTQUEUE = Path("/usr/sbin/postqueue")
MESSAGES = 50
REFUSED = 20  # the sink answers 451 to this many messages first

# The mail peer is the point here, not the database: one backend is enough.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

# Only the services a relay needs, none chrooted (the queue is in a temporary directory).
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

# Relay everything from loopback to the sink; deliver nothing locally. The Debian package
# answered "No configuration" leaves no defaults of its own to undo. How deferred mail is
# retried is the test's: QUICK_RETRIES or RETRIES_ON_FLUSH.
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
myhostname = postfix.mentorlus.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
default_transport = smtp
relay_transport = relay
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
{retries}
"""

# Retries come quickly: a deferred message is tried again after a second, not after
# Postfix's five minutes (and its queue manager looks for such every second).
QUICK_RETRIES = """\
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s"""
# A deferred message stays deferred until `postqueue -f`: the queue manager tries neither it
# nor its destination again meanwhile. With quick retries the messages of a dead destination
# go round deferred -> active -> deferred every second, and "all of them deferred" is only
# true between two rounds: under load the test could wait for such a moment in vain.
RETRIES_ON_FLUSH = """\
queue_run_delay = 1s
minimal_backoff_time = 1h
maximal_backoff_time = 1h"""


# -- the sink and Postfix --------------------------------------------------------------------


class Sink:
    """aiosmtpd handler: answers the first `refuse` messages with 451, then keeps each one."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.refused = 0
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refused < self.refuse:
            self.refused += 1
            return "451 4.3.0 try again later"
        self.received.append(bytes(envelope.original_content or envelope.content))
        return "250 2.0.0 OK"

    def message_ids(self) -> Counter[str]:
        return Counter(
            str(message_from_bytes(content, policy=policy.default)["Message-ID"])
            for content in list(self.received)
        )


@dataclass
class Postfix:
    root: Path
    reserved: ReservedPort  # its SMTP port, nobody else's until stop_postfix()

    @property
    def port(self) -> int:
        return self.reserved.port

    @property
    def config(self) -> str:
        return str(self.root / "etc")

    def flush(self) -> None:
        """`postqueue -f`: try every deferred message now."""
        subprocess.run([str(POSTQUEUE), "-c", self.config, "-f"], check=True)

    def queued(self) -> Counter[str]:
        """How many messages wait in each of Postfix's queues (active, deferred, ...)."""
        listing = subprocess.run(
            [str(POSTQUEUE), "-c", self.config, "-j"], check=True, capture_output=True, text=True
        ).stdout
        return Counter(json.loads(line)["queue_name"] for line in listing.splitlines())

    @property
    def log_file(self) -> Path:
        return self.root / "postfix.log"

    def log(self) -> str:
        path = self.log_file
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def master_alive(self) -> bool:
        pid_file = self.root / "spool" / "pid" / "master.pid"
        try:
            return process_alive(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return False


def postfix_or_skip() -> None:
    problem = None
    if not POSTFIX.exists():
        problem = "Postfix is not installed (apt-get install postfix)"
    elif os.geteuid() != 0:
        problem = "a private Postfix instance needs root to start"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}: the Postfix tests must run in CI")
    pytest.skip(problem)


def start_postfix(sink_port: int, retries: str = QUICK_RETRIES) -> Postfix:
    """A private instance; if it does not start, the failure shows its log (and the
    temporary directory is removed only after that)."""
    # Not pytest's tmp_path: its parents are private to root, and Postfix's daemons run as
    # the postfix user and must reach the queue directory.
    root = Path(tempfile.mkdtemp(prefix="mentorlus-postfix-"))
    root.chmod(0o755)
    (root / "etc").mkdir()
    (root / "spool").mkdir()
    instance = Postfix(root, ReservedPort())
    main_cf = MAIN_CF.format(root=root, sink_port=sink_port, retries=retries)
    (root / "etc" / "main.cf").write_text(main_cf)
    (root / "etc" / "master.cf").write_text(MASTER_CF.format(port=instance.port))
    try:
        command = [str(POSTFIX), "-c", instance.config, "start"]
        run_logged(command, what="postfix start", logs=[instance.log_file])
        with logs_on_failure("Postfix to listen", instance.log_file):
            wait_until(
                lambda: instance.master_alive() and port_open(instance.port),
                timeout=60,
                what=f"Postfix's master to listen on {instance.port}",
            )
    except BaseException:
        stop_postfix(instance)
        raise
    return instance


def stop_postfix(instance: Postfix) -> None:
    pid_file = instance.root / "spool" / "pid" / "master.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
    subprocess.run([str(POSTFIX), "-c", instance.config, "stop"], check=False)
    if pid is not None:  # its daemons write to the directory until the master is gone
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not process_alive(pid), timeout=20, what="Postfix to stop")
    instance.reserved.release()
    shutil.rmtree(instance.root, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sink_port() -> Iterator[int]:
    """The sink's port: while no sink listens there Postfix's connections are refused, and
    no other process can be given it meanwhile."""
    reserved = ReservedPort()
    yield reserved.port
    reserved.release()


@pytest.fixture
def retries() -> str:
    """How the instance retries deferred mail (a test may parametrize it)."""
    return QUICK_RETRIES


@pytest.fixture
def postfix(sink_port: int, retries: str) -> Iterator[Postfix]:
    postfix_or_skip()
    instance = start_postfix(sink_port, retries)
    yield instance
    stop_postfix(instance)


@pytest.fixture
def settings(settings: Settings, postfix: Postfix) -> Settings:
    """The conftest settings, sending to Postfix."""
    return replace(settings, smtp_port=postfix.port, smtp_timeout=10, smtp_connections=2)


def start_sink(handler: Sink, port: int) -> Controller:
    # aiosmtpd's 5 s to come up (and answer its own probe) is tight on a loaded machine.
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=60)
    controller.start()
    return controller


def hand_over(app: App) -> set[str]:
    """Queue MESSAGES emails (and three applicants' receipts) and let the worker give them all
    to Postfix; their Message-IDs."""
    queue_bulk(app, MESSAGES - 3, people=3)
    asyncio.run(delivery.run(app, once=True))
    assert count_status(app) == {"sent": MESSAGES}  # Postfix took each one
    return {message.message_id for message in outbox_rows(app)}


def arrive(postfix: Postfix, sink: Sink, expected: set[str]) -> None:
    """Wait until Postfix has passed on every message and holds none back."""

    def all_in() -> bool:
        # The log line of the last delivery may come a moment after the message itself.
        done = postfix.log().count("status=sent") >= len(expected)
        return set(sink.message_ids()) == expected and not postfix.queued() and done

    try:
        wait_until(all_in, timeout=60, what=f"{len(expected)} messages at the sink")
    except AssertionError as error:
        raise AssertionError(f"{error}\nPostfix log:\n{postfix.log()[-4000:]}") from None


# -- tests -----------------------------------------------------------------------------------


def test_every_message_arrives_once_with_its_message_id_after_postfix_retries_the_451s(
    app: App, postfix: Postfix, sink_port: int
) -> None:
    sink = Sink(refuse=REFUSED)
    controller = start_sink(sink, sink_port)
    try:
        expected = hand_over(app)
        arrive(postfix, sink, expected)
    finally:
        controller.stop()

    assert sink.message_ids() == Counter({message_id: 1 for message_id in expected})
    assert sink.refused == REFUSED
    # The refused ones were deferred by Postfix and sent again by its queue manager.
    assert postfix.log().count("status=deferred") == REFUSED
    assert postfix.log().count("status=sent") == MESSAGES


@pytest.mark.parametrize("retries", [RETRIES_ON_FLUSH], ids=["retries-on-flush"])
def test_messages_wait_in_postfix_while_the_sink_is_down_and_arrive_once_when_it_is_back(
    app: App, postfix: Postfix, sink_port: int
) -> None:
    expected = hand_over(app)
    # Postfix tried, could not connect, and keeps every message in its deferred queue. (Its
    # log line may come a moment after the queue file has moved.)
    every_message_deferred = Counter({"deferred": MESSAGES})
    with logs_on_failure("Postfix to defer every message", postfix.log_file):
        wait_until(
            lambda: (
                postfix.queued() == every_message_deferred and "Connection refused" in postfix.log()
            ),
            timeout=120,
            what="every message deferred",
            state=postfix.queued,
        )
    assert postfix.queued() == every_message_deferred
    assert "Connection refused" in postfix.log()

    sink = Sink()
    controller = start_sink(sink, sink_port)
    try:
        postfix.flush()
        arrive(postfix, sink, expected)
    finally:
        controller.stop()

    assert sink.message_ids() == Counter({message_id: 1 for message_id in expected})
    assert postfix.log().count("status=sent") == MESSAGES
