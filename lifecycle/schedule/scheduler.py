"""The worker's clock: APScheduler 3 ticks the job bodies; every job's state lives in the database.

APScheduler keeps no job store here (a store cannot be shared by processes): timers,
round mail and digests are rows, so a tick missed while the worker was down is made up
by the next one, and several workers never do the same work twice.
"""

from __future__ import annotations

import logging
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from lifecycle.bootstrap import App
from lifecycle.privacy import retention as privacy_retention
from lifecycle.schedule import intake, jobs

log = logging.getLogger(__name__)

TIMER_INTERVAL_SECONDS = 30
ROUND_INTERVAL_SECONDS = 300
# Local hour of the daily retention run: at night, and not 03:00-04:00 (DST changes).
RETENTION_HOUR = 2


def fire_timers(app: App) -> dict[str, int]:
    return jobs.fire_due_timers(app)


def round_mail(app: App) -> dict[str, int]:
    with app.unit() as tx:
        return intake.run_round_mail(tx)


def digests(app: App) -> int:
    with app.unit() as tx:
        return jobs.send_digests(tx)


def retention(app: App) -> int:
    with app.unit() as tx:
        return privacy_retention.run_retention(tx)


def run_due_now(app: App) -> dict[str, Any]:
    """Everything due now, once: for `worker --once` and deployments that use system cron."""
    return {
        "timers": fire_timers(app),
        "rounds": round_mail(app),
        "digests": digests(app),
        "retention": retention(app),
    }


def build(app: App) -> AsyncIOScheduler:
    """The jobs, wired in one place; start it inside the worker's event loop."""
    zone = app.settings.time_zone
    scheduler = AsyncIOScheduler(
        timezone=zone,
        # A late run must still happen (the default grace of 1 s would skip it), once.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    scheduler.add_job(
        fire_timers,
        IntervalTrigger(seconds=TIMER_INTERVAL_SECONDS),
        args=[app],
        id="timers",
        replace_existing=True,
        next_run_time=app.clock(),
    )
    scheduler.add_job(
        round_mail,
        IntervalTrigger(seconds=ROUND_INTERVAL_SECONDS),
        args=[app],
        id="rounds",
        replace_existing=True,
        next_run_time=app.clock(),
    )
    scheduler.add_job(
        digests,
        CronTrigger(hour=app.settings.digest_hour, timezone=zone),
        args=[app],
        id="digests",
        replace_existing=True,
    )
    scheduler.add_job(
        retention,
        CronTrigger(hour=RETENTION_HOUR, timezone=zone),
        args=[app],
        id="retention",
        replace_existing=True,
    )
    return scheduler
