"""Real processes the suite can stop, kill and start again.

A private PostgreSQL cluster (its own data directory and port: the suite restarts it), the
SMTP sink (tests/reliability/sink.py), and `mentorlus serve` / `mentorlus worker` children
with their logs in files. A Supervisor restarts a service that exits on its own, as systemd
would with Restart=always, and records each such exit: the suite reports them as findings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.processes import (
    ReservedPort,
    logs_on_failure,
    run_logged,
    wait_for_server,
    wait_until,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MENTORLUS = Path(sys.executable).parent / "mentorlus"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian layout), or None."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    return max(found, key=lambda path: int(path.parent.name), default=None)


class PgCluster:
    """A throwaway cluster on loopback: initdb in a temporary directory, then pg_ctl.

    fsync is off (as in CI): a restart kills the server process, not the machine, so the
    operating system still holds every write the server made. Its port is reserved for it
    (ReservedPort) from initdb until destroy(), through every restart; its socket and lock
    files are in its own directory, not in /tmp beside another cluster's.
    """

    def __init__(self, binaries: Path) -> None:
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="mentorlus-reliability-pg-"))
        self.data = self.root / "data"
        self.reserved = ReservedPort()
        self.port = self.reserved.port
        self.as_root = os.geteuid() == 0
        if self.as_root:  # the server refuses to run as root: it runs as postgres
            shutil.chown(self.root, "postgres")
        self.log = self.root / "server.log"
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        except BaseException:
            self.destroy()
            raise

    def _run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL program; if it fails, the error holds its output and the server's
        log (read now: destroy() removes the directory)."""
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        run_logged(command, what=f"PostgreSQL: {program} {args[-1]}", logs=[self.log])

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        log = str(self.log)
        # -t: pg_ctl waits this long for the server to accept connections (recovery included).
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "180", "-o", options, "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        """immediate: the server processes are killed and the next start recovers from WAL."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "180", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            self.reserved.release()
            shutil.rmtree(self.root, ignore_errors=True)


# -- the SMTP sink -----------------------------------------------------------------------------


class Sink:
    """The sink process; `received()` reads every message it ever accepted."""

    def __init__(self, directory: Path) -> None:
        self.reserved = ReservedPort()  # also while it is killed: it starts again on it
        self.port = self.reserved.port
        self.record = directory / "sink.jsonl"
        self.log = directory / "sink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.sink", *self._arguments()],
                cwd=PROJECT_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for_server(
            lambda: listening(self.port),
            process=self.process,
            timeout=120,
            what="the SMTP sink to listen",
            logs=[self.log],
        )

    def _arguments(self) -> list[str]:
        return ["--port", str(self.port), "--record", str(self.record)]

    def kill(self) -> None:
        """The server vanishes at once, as in a crash: open connections just end."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=10)
        finally:
            self.reserved.release()

    def received(self) -> list[dict[str, Any]]:
        return self.read_from(0)[0]

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """The messages recorded after byte `offset`, and the offset after the last whole line."""
        if not self.record.exists():
            return [], offset
        with self.record.open("rb") as record:
            record.seek(offset)
            data = record.read()
        whole = data[: data.rfind(b"\n") + 1]
        lines = whole.decode("utf-8").splitlines()
        return [json.loads(line) for line in lines], offset + len(whole)


# -- the service -------------------------------------------------------------------------------


@dataclass
class Service:
    """One `mentorlus` child process: a web server or a worker."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    expected_down: bool = False  # the suite stopped it on purpose
    reserved: ReservedPort | None = None  # its port, kept for it until release()

    @classmethod
    def web(cls, name: str, env: dict[str, str], log: Path) -> Service:
        """`mentorlus serve` on a port reserved for it, through its restarts."""
        reserved = ReservedPort()
        argv = ["serve", "--port", str(reserved.port)]
        return cls(name, argv, env, log, reserved.port, reserved=reserved)

    def release(self) -> None:
        if self.reserved is not None:
            self.reserved.release()

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(MENTORLUS), *self.argv],
                env=self.env,
                cwd=PROJECT_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.expected_down = False

    def ready(self) -> bool:
        if self.port is None:
            return True
        try:
            return httpx.get(self.url("/static/style.css"), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, whatever the process was doing."""
        self.expected_down = True
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.expected_down = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# The line that ends a Python traceback: the exception and its message.
ERROR_LINE = re.compile(r"^[\w.]+(Error|Exception)\b")


def last_error(lines: list[str]) -> str:
    """The exception line that ended a traceback, or else the last line."""
    return next((line for line in reversed(lines) if ERROR_LINE.match(line)), (lines or [""])[-1])


@dataclass
class Exit:
    """A service that ended on its own, and why."""

    service: str
    code: int
    at: float
    reason: str


@dataclass
class Supervisor:
    """Starts the services and restarts any that exits on its own (Restart=always)."""

    services: list[Service]
    exits: list[Exit] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        for service in self.services:
            service.start()
        for service in self.services:
            wait_for_server(
                service.ready,
                process=service.process,
                timeout=180,  # a Python process on a loaded machine can take a minute
                what=f"{service.name} to answer",
                logs=[service.log],
            )
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for service in self.services:
                process = service.process
                if service.expected_down or process is None or process.poll() is None:
                    continue
                lines = service.log.read_text(encoding="utf-8", errors="replace").splitlines()
                reason = last_error(lines[-30:])[:200]
                self.exits.append(Exit(service.name, process.returncode, time.time(), reason))
                time.sleep(1)  # as systemd's RestartSec: no tight loop against a dead database
                service.start()

    def restart(self, service: Service) -> None:
        """Start a service the suite stopped or killed."""
        service.start()
        # Not wait_for_server: the watch thread may replace a process that exits meanwhile.
        with logs_on_failure(f"{service.name} to answer again", service.log):
            wait_until(service.ready, timeout=180, what=f"{service.name} to answer again")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for service in self.services:
            service.stop()
            service.release()
