"""Settings: `config.toml` (path from MENTORLUS_CONFIG), each key overridable by the environment."""

from __future__ import annotations

import contextlib
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MENTORLUS_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    programme_name: str
    from_address: str
    time_zone: ZoneInfo
    language: str
    max_open_requests: int
    committee_size: int
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str
    smtp_password: str
    smtp_timeout: float
    smtp_connections: int
    delivery_batch_size: int
    delivery_lease: timedelta
    delivery_max_attempts: int
    delivery_backoff_base: timedelta
    delivery_backoff_max: timedelta
    delivery_poll_seconds: float
    base_url: str
    link_valid: timedelta
    # After its first step, a link's page takes more steps from that browser this long.
    link_grace: timedelta
    # A staff session ends after this long without a request, and this long after the login.
    staff_session_idle: timedelta
    staff_session_max: timedelta
    secret_key: bytes
    sink_directory: Path
    intake_opens: tuple[tuple[int, int], ...]  # (month, day)
    intake_open_hour: int
    intake_length: timedelta
    intake_reminder: timedelta
    digest_hour: int
    # Reports show a count of fewer people than this as "<n" (lifecycle.reports).
    report_min_group_size: int
    # Closed relations keep their confidential texts this long (lifecycle.privacy).
    retention: timedelta
    log_format: str  # console, json
    log_level: str
    workflows_dir: Path = PROJECT_ROOT / "workflows"
    templates_dir: Path = PROJECT_ROOT / "email_templates"
    # {workflow: {state: {timer name: duration}}}
    timer_overrides: Mapping[str, Mapping[str, Mapping[str, timedelta]]] = field(
        default_factory=dict
    )


def parse_duration(text: str, *, key: str) -> timedelta:
    """Parse "3d", "12h" or "-2d" into a timedelta."""
    value = text.strip()
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(value) < 2 or value[-1] not in units:
        raise ConfigError(f"{key}: {text!r} is not a duration like '3d', '12h' or '-2d'")
    try:
        amount = int(value[:-1])
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a duration like '3d', '12h' or '-2d'") from None
    return timedelta(**{units[value[-1]]: amount})


def _month_day(text: str) -> tuple[int, int]:
    try:
        month, day = (int(part) for part in text.split("-"))
        date(2001, month, day)  # a real day in a year that is not a leap year
    except ValueError:
        raise ConfigError(f"intake.opens: {text!r} is not a month-day like '03-01'") from None
    return month, day


def _hour(value: int, *, key: str) -> int:
    # Local times between 03:00 and 04:00 run twice or not at all on DST change days.
    if not 0 <= value <= 23 or value == 3:
        raise ConfigError(f"{key}: {value} must be an hour 0-23 other than 3 (DST changes)")
    return value


def _at_least(value: int, minimum: int, *, key: str) -> int:
    if value < minimum:
        raise ConfigError(f"{key}: {value} must be at least {minimum}")
    return value


def _one_of(value: str, allowed: tuple[str, ...], *, key: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _secret_key(environ: Mapping[str, str], base_url: str) -> bytes:
    """The key that signs email links: from the environment, or a local file for development."""
    if key := environ.get("MENTORLUS_SECRET_KEY"):
        if len(key) < 32:
            raise ConfigError("MENTORLUS_SECRET_KEY must be at least 32 characters")
        return key.encode()
    if base_url.startswith("https://"):
        # A public site: a key file per checkout would differ between hosts and be lost with
        # a redeploy, and every link in the mail already sent would stop working.
        raise ConfigError(
            f"MENTORLUS_SECRET_KEY must be set for a site served at {base_url} "
            "(the key file is for development only)"
        )
    # Development and the demo: one random key per checkout, kept out of git.
    path = PROJECT_ROOT / ".secret-key"
    if not path.exists():
        draft = path.with_name(f".secret-key.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        draft.chmod(0o600)
        with contextlib.suppress(FileExistsError):  # another process was first: use its key
            os.link(draft, path)
        draft.unlink()
    return path.read_text(encoding="utf-8").strip().encode()


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the config file and the environment into Settings."""
    environ = os.environ if environ is None else environ
    path = path or Path(environ.get("MENTORLUS_CONFIG", PROJECT_ROOT / "config.toml"))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    _apply_env(raw, environ)

    def get(section: str, key: str) -> Any:
        try:
            return raw[section][key]
        except KeyError:
            raise ConfigError(f"{path}: [{section}] {key} is missing") from None

    overrides = {
        workflow: {
            state: {
                name: parse_duration(str(value), key=f"timers.{workflow}.{state}.{name}")
                for name, value in timers.items()
            }
            for state, timers in states.items()
        }
        for workflow, states in raw.get("timers", {}).items()
    }
    settings = Settings(
        database_url=str(get("database", "url")),
        programme_name=str(get("programme", "name")),
        from_address=str(get("programme", "from_address")),
        time_zone=ZoneInfo(str(get("programme", "time_zone"))),
        language=str(get("programme", "language")),
        max_open_requests=int(get("programme", "max_open_requests")),
        committee_size=int(get("programme", "committee_size")),
        smtp_host=str(get("smtp", "host")),
        smtp_port=int(get("smtp", "port")),
        smtp_security=_one_of(
            str(get("smtp", "security")), ("none", "starttls", "tls"), key="smtp.security"
        ),
        smtp_username=str(get("smtp", "username")),
        smtp_password=environ.get("MENTORLUS_SMTP_PASSWORD", ""),
        smtp_timeout=float(get("smtp", "timeout_seconds")),
        smtp_connections=int(get("smtp", "connections")),
        delivery_batch_size=int(get("delivery", "batch_size")),
        delivery_lease=timedelta(seconds=int(get("delivery", "lease_seconds"))),
        delivery_max_attempts=int(get("delivery", "max_attempts")),
        delivery_backoff_base=timedelta(seconds=int(get("delivery", "backoff_base_seconds"))),
        delivery_backoff_max=timedelta(seconds=int(get("delivery", "backoff_max_seconds"))),
        delivery_poll_seconds=float(get("delivery", "poll_seconds")),
        base_url=str(get("web", "base_url")).rstrip("/"),
        link_valid=timedelta(days=int(get("web", "link_valid_days"))),
        link_grace=timedelta(
            minutes=_at_least(
                int(get("web", "link_grace_minutes")), 1, key="web.link_grace_minutes"
            )
        ),
        # A session's last request is written down once a minute, so a few minutes' idle
        # time at least: less would end sessions in use.
        staff_session_idle=timedelta(
            minutes=_at_least(
                int(get("web", "session_idle_minutes")), 5, key="web.session_idle_minutes"
            )
        ),
        staff_session_max=timedelta(
            hours=_at_least(int(get("web", "session_max_hours")), 1, key="web.session_max_hours")
        ),
        secret_key=_secret_key(environ, str(get("web", "base_url"))),
        sink_directory=Path(str(get("sink", "directory"))),
        intake_opens=tuple(_month_day(str(text)) for text in get("intake", "opens")),
        intake_open_hour=_hour(int(get("intake", "open_hour")), key="intake.open_hour"),
        intake_length=timedelta(days=int(get("intake", "length_days"))),
        intake_reminder=timedelta(days=int(get("intake", "reminder_days"))),
        digest_hour=_hour(int(get("digest", "hour")), key="digest.hour"),
        report_min_group_size=_at_least(
            int(get("reports", "min_group_size")), 1, key="reports.min_group_size"
        ),
        retention=timedelta(
            days=_at_least(int(get("privacy", "retention_days")), 1, key="privacy.retention_days")
        ),
        log_format=_one_of(
            str(get("logging", "format")), ("console", "json"), key="logging.format"
        ),
        log_level=_one_of(
            str(get("logging", "level")).upper(),
            ("DEBUG", "INFO", "WARNING", "ERROR"),
            key="logging.level",
        ),
        timer_overrides=overrides,
    )
    if settings.delivery_lease.total_seconds() <= 2 * settings.smtp_timeout:
        # A worker starts no send its lease might not cover, so the lease must be longer.
        raise ConfigError("delivery.lease_seconds must be more than twice smtp.timeout_seconds")
    return settings
