"""`make soak`: the reliability suite's long part.

    python -m tests.reliability.soak [--seconds 600] [--directory DIR]

Runs the PostgreSQL deployment under load for --seconds, going round the fault cycle again
and again (tests/reliability/scenario.py), with a minute between a request's reminder and
its expiry so that late answers race the timer; then the SQLite faults. Prints what each
run held and survived and where the logs are; exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.reliability.scenario import run_postgres
from tests.reliability.sqlite_faults import run_sqlite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="load on PostgreSQL")
    parser.add_argument("--directory", type=Path, help="for the logs (default: a new temp dir)")
    args = parser.parse_args()
    directory = args.directory or Path(tempfile.mkdtemp(prefix="mentorlus-soak-"))
    held = True
    for name, run in (
        ("postgres", lambda path: run_postgres(path, seconds=args.seconds, step_after="2m")),
        ("sqlite", run_sqlite),
    ):
        path = directory / name
        path.mkdir(parents=True, exist_ok=True)
        result = run(path)
        print(f"{result.summary()}\nlogs: {path}\n", flush=True)
        held = held and not result.problems
    return 0 if held else 1


if __name__ == "__main__":
    raise SystemExit(main())
