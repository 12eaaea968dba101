"""For tests that run other processes: loopback ports, waiting for them, and their logs.

A helper server that fails to start (or to answer) fails the test with its log in the
message: `logs_on_failure`, `run_logged` and `wait_for_server` read the log when the
failure is raised, before a `finally` removes the temporary directory it is in. A server's
port is best a `ReservedPort`: a `free_port()` is free only when it is asked for.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LOG_TAIL = 8000  # characters of each log in a failure message


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (see ReservedPort)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ReservedPort:
    """A loopback TCP port kept for a server of ours until `release()`.

    free_port()'s port is free only at that moment: until the server has bound it, and
    whenever the server is down (stopped, killed, restarting), any process's bind(0) may be
    given it. A reserved port is bound with SO_REUSEADDR but never listened on: the kernel
    gives it to no bind(0) and uses it as no connection's source port, yet a server that sets
    SO_REUSEADDR (PostgreSQL, Postfix, asyncio and so uvicorn and aiosmtpd do) binds and
    listens on it; while none listens, a connection is refused, as on a free port.
    """

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def release(self) -> None:
        self._socket.close()


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    every: float = 0.05,
    state: Callable[[], object] | None = None,
) -> None:
    """Poll in real time: what is awaited runs in other processes, on the real clock.

    `state`, if given, says on a timeout what was last seen instead.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            seen = f"; last seen: {state()}" if state is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}")
        time.sleep(every)


class ServerFailed(AssertionError):
    """A helper server did not start, answer or stop; the message holds its log."""


def log_tail(path: Path, limit: int = LOG_TAIL) -> str:
    """The end of a log file, as text; says so when there is none."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"(no log: {error.strerror})"
    text = data[-limit:].decode("utf-8", errors="replace")
    return text if len(data) <= limit else f"[... {len(data) - limit} bytes before]\n{text}"


def _described(error: BaseException) -> str:
    if isinstance(error, subprocess.CalledProcessError | subprocess.TimeoutExpired):
        lines = [str(error)]
        for name in ("stdout", "stderr"):
            output = getattr(error, name, None)
            if isinstance(output, bytes):
                output = output.decode("utf-8", errors="replace")
            if output and output.strip():
                lines.append(f"--- its {name}:\n{output.rstrip()[-LOG_TAIL:]}")
        return "\n".join(lines)
    return f"{type(error).__name__}: {error}"


def _with_logs(text: str, logs: Sequence[Path]) -> str:
    return "\n".join([text, *(f"--- {path}:\n{log_tail(path).rstrip()}" for path in logs)])


@contextmanager
def logs_on_failure(what: str, *logs: Path) -> Iterator[None]:
    """An exception inside is raised again as ServerFailed, with the end of each log."""
    try:
        yield
    except ServerFailed:
        raise
    except Exception as error:
        raise ServerFailed(_with_logs(f"{what}: {_described(error)}", logs)) from error


def run_logged(
    command: Sequence[str], *, what: str, logs: Sequence[Path] = (), timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a command that starts or stops a server; if it fails, raise with its output and
    the logs."""
    with logs_on_failure(what, *logs):
        return subprocess.run(
            list(command), check=True, capture_output=True, text=True, timeout=timeout
        )


def wait_for_server(
    ready: Callable[[], bool],
    *,
    process: subprocess.Popen[bytes] | None,
    timeout: float,
    what: str,
    logs: Sequence[Path] = (),
) -> None:
    """Wait until a started server is ready; fail at once if its process ends meanwhile."""

    def up() -> bool:
        if process is not None and process.poll() is not None:
            raise ServerFailed(
                _with_logs(f"{what}: the process exited with {process.returncode}", logs)
            )
        return ready()

    with logs_on_failure(what, *logs):
        wait_until(up, timeout=timeout, what=what)
