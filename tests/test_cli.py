"""The `mentorlus` command: JSON for scripts, one-line reasons and non-zero exits on refusal."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lifecycle import bootstrap
from lifecycle.cli.main import main, parser
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from tests.conftest import COMMITTEE, COORDINATOR, START, write_lock_held


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite file made by `mentorlus init`, with the staff in it."""
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", url)
    assert main(["init"]) == 0
    app = bootstrap.build(load_settings(), clock=ManualClock(START))
    scenarios.add_staff(app, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for email in COMMITTEE:
        scenarios.add_staff(app, name=email, email=email, role="committee")
    app.engine.dispose()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run the CLI with --json; returns (exit code, parsed stdout or None, stderr)."""
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def submit_application(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    email: str = "kadri.kuusk@example.org",
    **overrides: Any,
) -> tuple[int, Any, str]:
    """`application submit` of Kadri Kuusk's application (or with these changes) by the
    coordinator, as `run` answers it."""
    data = scenarios.applicant(email, "Kadri Kuusk", **overrides)
    return run(
        capsys, "application", "submit", "--file", write(tmp_path, data), "--actor", COORDINATOR
    )


def test_a_coordinator_enters_an_application_and_advances_it_from_the_command_line(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, created, _ = submit_application(capsys, tmp_path)
    assert code == 0 and created["state"] == "submitted"
    ref = created["id"]
    code, moved, _ = run(capsys, "case", "advance", ref, "begin_review", "--actor", COORDINATOR)
    assert (code, moved["from"], moved["to"]) == (0, "submitted", "eligibility")

    code, shown, _ = run(capsys, "case", "show", ref)
    assert shown["state"] == "eligibility"
    assert {s["trigger"] for s in shown["next_steps"]} == {
        "request_info",
        "verify_evidence",
        "mark_eligible",
        "mark_ineligible",
        "withdraw",
    }
    assert [e["trigger"] for e in shown["timeline"] if e["kind"] == "step"] == [
        "submit",
        "begin_review",
    ]
    assert {q["rule"]: q["passed"] for q in shown["qualifications"]}["experience"] is True

    code, listed, _ = run(capsys, "case", "list", "--state", "eligibility")
    assert [row["id"] for row in listed] == [ref]


def test_reading_commands_answer_while_another_process_holds_the_write_lock(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, created, _ = submit_application(capsys, tmp_path)
    _, (message, *_), _ = run(capsys, "outbox", "list")
    readers = [
        ("case", "list"),
        ("case", "show", created["id"]),
        ("outbox", "list"),
        ("outbox", "show", str(message["id"])),
        ("upcoming", "--until", "2027-12-31"),
        ("person", "export", "kadri.kuusk@example.org"),
    ]
    app = bootstrap.build(load_settings())
    try:
        # A command that took the write lock would wait the engine's 30 s, then fail.
        with write_lock_held(app):
            codes = {" ".join(args): run(capsys, *args)[0] for args in readers}
    finally:
        app.engine.dispose()
    assert codes == {" ".join(args): 0 for args in readers}


def test_a_refused_step_exits_non_zero_with_one_line_naming_the_rule(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, created, _ = submit_application(capsys, tmp_path)
    code, out, err = run(
        capsys,
        "case",
        "advance",
        created["id"],
        "begin_review",
        "--actor",
        "kadri.kuusk@example.org",
    )
    assert code == 1 and out is None
    assert err.strip().count("\n") == 0
    assert err.startswith("refused (role):") and "coordinator" in err


def test_the_reason_of_an_override_is_kept_in_the_timeline(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, created, _ = submit_application(capsys, tmp_path, years_in_social_field=3)
    ref = created["id"]
    run(capsys, "case", "advance", ref, "begin_review", "--actor", COORDINATOR)
    code, _, err = run(capsys, "case", "advance", ref, "mark_eligible", "--actor", COORDINATOR)
    assert code == 1 and "refused (qualifications_met)" in err and "3 years" in err
    code, moved, _ = run(
        capsys,
        "case",
        "advance",
        ref,
        "mark_eligible",
        "--actor",
        COORDINATOR,
        "--reason",
        "Tunnistatud välismaine kogemus",
    )
    assert (code, moved["to"]) == (0, "interview")
    _, shown, _ = run(capsys, "case", "show", ref)
    step = next(e for e in shown["timeline"] if e.get("trigger") == "mark_eligible")
    assert step["comment"] == "override: Tunnistatud välismaine kogemus"


def test_bad_input_is_named_and_changes_nothing(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = submit_application(capsys, tmp_path, email="not-an-email")
    assert code == 1 and err.startswith("invalid input: email:")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    code, _, err = run(capsys, "request", "submit", "--file", str(broken))
    assert code == 1 and "--file" in err and "not valid JSON" in err
    code, _, err = run(capsys, "case", "show", "Q-1")
    assert code == 1 and err.startswith("not found:")
    code, cases, _ = run(capsys, "case", "list")
    assert cases == []


def test_a_stale_expected_version_is_a_conflict(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, created, _ = submit_application(capsys, tmp_path)
    run(capsys, "case", "advance", created["id"], "begin_review", "--actor", COORDINATOR)
    code, _, err = run(
        capsys,
        "case",
        "advance",
        created["id"],
        "withdraw",
        "--actor",
        COORDINATOR,
        "--expected-version",
        "1",
    )
    assert code == 1 and err.startswith("conflict:") and "eligibility" in err


def test_a_broken_config_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MENTORLUS_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["check"]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err


def test_check_validates_the_workflow_files(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = run(capsys, "check")
    assert code == 0 and set(result["workflows"]) == {"mentor_application", "mentoring"}


def test_every_command_has_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    def walk(current: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
        found = [path]
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += walk(sub, [*path, name])
        return found

    paths = walk(parser(), [])
    assert ["case", "advance"] in paths and ["demo", "load"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        assert exit_.value.code == 0, path
        help_text = capsys.readouterr().out
        assert help_text.startswith("usage: mentorlus"), path
        assert len(help_text.splitlines()) > 3, path


def test_the_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "mentorlus"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "case" in result.stdout
