"""The workflow files load and validate; each kind of mistake is an error naming file and key."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from lifecycle.bootstrap import REGISTRIES
from lifecycle.config import PROJECT_ROOT, ConfigError, Settings, load_settings
from lifecycle.mail.emails import environment, render, sample_context
from lifecycle.workflows.loader import load_workflow, load_workflows
from lifecycle.workflows.spec import WorkflowError

WORKFLOW_FILES = sorted((PROJECT_ROOT / "workflows").glob("*.toml"))
TEMPLATES = PROJECT_ROOT / "email_templates"


@pytest.fixture
def settings() -> Settings:
    return load_settings(environ={})


def _broken(tmp_path: Path, settings: Settings, name: str, old: str, new: str) -> Settings:
    """A copy of the workflows folder where one file has `old` replaced by `new`."""
    folder = tmp_path / "workflows"
    shutil.copytree(settings.workflows_dir, folder)
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return replace(settings, workflows_dir=folder)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_each_workflow_file_loads_with_labels_in_both_languages(
    path: Path, settings: Settings
) -> None:
    workflow = load_workflow(path, settings, REGISTRIES)
    assert workflow.states and workflow.transitions
    for state in workflow.states.values():
        assert state.label["et"] and state.label["en"]
    for spec in workflow.transitions:
        assert spec.roles, spec.trigger


def test_both_lifecycles_use_the_canonical_state_names(settings: Settings) -> None:
    workflows = load_workflows(settings, REGISTRIES)
    assert set(workflows["mentor_application"].states) == {
        "submitted",
        "eligibility",
        "awaiting_info",
        "interview",
        "listed",
        "paused",
        "rejected",
        "withdrawn",
        "retired",
    }
    assert set(workflows["mentoring"].states) == {
        "requested",
        "first_meeting",
        "agreement",
        "active",
        "reframed",
        "closed",
        "declined",
        "expired",
    }


def test_machines_are_built_without_automatic_to_state_triggers(settings: Settings) -> None:
    workflow = load_workflows(settings, REGISTRIES)["mentoring"]
    assert not any(name.startswith("to_") for name in workflow.machine.events)
    assert workflow.machine.models == []  # no case is pinned in the shared machine


TEMPLATE_NAMES = sorted(p.stem for p in (TEMPLATES / "et").glob("[!_]*.txt"))
# A confirmation goes to an address nobody has proven yet: greeting it by the name typed
# would tell a stranger's name to whoever owns the address.
UNPROVEN_ADDRESS_TEMPLATES = {"application_confirm", "request_confirm"}


@pytest.mark.parametrize("language", ["et", "en"])
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_renders_in_both_languages(name: str, language: str) -> None:
    subject, body = render(environment(TEMPLATES, language), name, sample_context())
    assert subject and "\n" not in subject
    named = sample_context()["recipient"]["name"] in body
    assert named is (name not in UNPROVEN_ADDRESS_TEMPLATES)


def test_both_languages_have_the_same_templates() -> None:
    assert {p.name for p in (TEMPLATES / "et").iterdir()} == {
        p.name for p in (TEMPLATES / "en").iterdir()
    }


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "mentoring.toml",
            'dest = "first_meeting"',
            'dest = "first_meting"',
            "transitions[0]: unknown state 'first_meting'",
        ),
        (
            "mentoring.toml",
            'guards = ["first_meeting_held", "both_go_on"]',
            'guards = ["first_meeting_held", "both_say_yes"]',
            "guards: guard 'both_say_yes' is not registered",
        ),
        (
            "mentoring.toml",
            'roles = ["mentor"]\nguards',
            "roles = []\nguards",
            "transitions[0].roles: trigger 'accept' has no role",
        ),
        (
            "mentoring.toml",
            'template = "request_received"',
            'template = "request_recieved"',
            "states.requested.emails[0].template: template 'request_recieved' does not exist",
        ),
        (
            "mentoring.toml",
            'effect = "add_meeting"',
            'effect = "add_meetings"',
            "effect: effect 'add_meetings' is not registered",
        ),
        (
            "mentor_application.toml",
            'trigger = "pause"\nsource = "listed"\ndest = "paused"',
            'trigger = "pause"\nsource = "listed"\ndest = "retired"',
            "states.paused: unreachable",
        ),
        (
            "mentor_application.toml",
            'after = "30d", trigger = "withdraw"',
            'after = "30d", trigger = "approve"',
            "'approve' is not a system transition from 'awaiting_info'",
        ),
        (
            "mentor_application.toml",
            'after = "7d", email = { template = "info_reminder"',
            'after = "7 days", email = { template = "info_reminder"',
            "timers[0].after: '7 days' is not a duration",
        ),
        (
            "mentoring.toml",
            'label = { et = "Käimas", en = "Active" }',
            'label = { et = "Käimas" }',
            "states.active: label needs an Estonian and an English",
        ),
        (
            "mentoring.toml",
            'fields.meeting_rhythm = { type = "text", max_length = 200 }',
            'fields.meeting_rhythm = { type = "text", max_length = "long" }',
            "fields.meeting_rhythm.max_length: must be a positive number",
        ),
    ],
    ids=[
        "unknown-state",
        "unregistered-guard",
        "trigger-without-role",
        "missing-template",
        "unregistered-effect",
        "unreachable-state",
        "timer-trigger-not-system",
        "bad-duration",
        "missing-label",
        "bad-max-length",
    ],
)
def test_a_broken_workflow_file_is_refused_naming_file_and_key(
    tmp_path: Path, settings: Settings, file: str, old: str, new: str, message: str
) -> None:
    broken = _broken(tmp_path, settings, file, old, new)
    with pytest.raises(WorkflowError) as error:
        load_workflows(broken, REGISTRIES)
    assert file in str(error.value)
    assert message in str(error.value)


def test_timer_durations_can_be_overridden_in_config(settings: Settings) -> None:
    from datetime import timedelta

    faster = replace(
        settings,
        timer_overrides={"mentoring": {"requested": {"expire": timedelta(days=5)}}},
    )
    requested = load_workflows(faster, REGISTRIES)["mentoring"].state("requested")
    assert {t.name: t.after for t in requested.timers}["expire"] == timedelta(days=5)


def test_a_site_served_over_https_needs_its_link_key_from_the_environment() -> None:
    public = {"MENTORLUS_WEB__BASE_URL": "https://mentorlus.example.ee"}
    with pytest.raises(ConfigError, match="MENTORLUS_SECRET_KEY must be set"):
        load_settings(environ=public)
    key = "k" * 40
    settings = load_settings(environ={**public, "MENTORLUS_SECRET_KEY": key})
    assert settings.secret_key == key.encode()
    assert load_settings(environ={}).secret_key  # development: the key file
