"""Fictional demo data, told through the real service path.

`load` builds its own app on a manual clock that starts about 200 days ago, opens the intake
rounds of that time and plays invented stories — mentor applications and mentoring relations —
step by step, each step in its own transaction at the moment the clock shows. The stories run
interleaved in time order; the last steps are a few days before the real now. Every person and
organisation here is invented.

The people and their stories are data, in story.toml (read and checked by `storyfile`), so that
a coordinator can change them without reading Python; this module only plays them.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases.accounts import add_user
from lifecycle.config import ConfigError, Settings
from lifecycle.demo import scenarios, storyfile
from lifecycle.demo.scenarios import ManualClock
from lifecycle.demo.storyfile import Demo, Step, Story
from lifecycle.errors import MentorlusError, Refused
from lifecycle.schedule import scheduler
from lifecycle.store.models import APPLICATION, MENTORING, Case, IntakeRound, Person
from lifecycle.workflows import rounds


def _actor(demo: Demo, story: Story, who: str) -> str | None:
    if who == "system":
        return None
    if who in ("applicant", "mentee"):
        return str(story.data["email"])
    if who == "mentor":
        return str(story.data["mentor"])
    if who == "coordinator":
        return demo.first("coordinator")
    return who


def _open(app: App, demo: Demo, story: Story, step: Step) -> str:
    """The story's case, opened by its first step: a submitted application or a request."""
    if step.trigger == "submit":
        # By the public form inside an intake round; otherwise a coordinator enters it.
        public = step.by == "applicant" and demo.stage.round_open(step.when)
        actor = None if public else demo.first("coordinator")
        return scenarios.submit_application(app, story.data, actor=actor)
    return scenarios.submit_request(app, story.data, actor=_actor(demo, story, step.by))


def _play(app: App, clock: ManualClock, demo: Demo) -> None:
    """Run every story's steps in time order, the clock only moving forward."""
    stage, stories = demo.stage, demo.stories
    queue = [(story.steps[0].when, order, 0) for order, story in enumerate(stories)]
    heapq.heapify(queue)
    latest = stage.now - timedelta(days=1)
    while queue:
        when, order, index = heapq.heappop(queue)
        story = stories[order]
        step = story.steps[index]
        where = f"{story.name}, step {index + 1} ({step.trigger})"
        if not clock.now <= when <= latest:
            local = f"day {stage.day_of(when)} {when.astimezone(stage.zone):%H:%M}"
            raise ConfigError(
                f"{where} at {local} is out of the timeline: a story's steps go forward in "
                "time, from day 0 08:00 to a day before now"
            )
        clock.now = when
        # The service ran all along: its timers, round mail and digests happen on the way.
        scheduler.run_due_now(app)
        try:
            if index == 0:
                story.ref = _open(app, demo, story, step)
            else:
                actor = _actor(demo, story, step.by)
                scenarios.step(app, story.ref, step.trigger, actor, **step.values)
        except MentorlusError as error:
            raise ConfigError(f"{where}: {error}") from error
        if index + 1 < len(story.steps):
            heapq.heappush(queue, (story.steps[index + 1].when, order, index + 1))
    clock.now = latest
    scheduler.run_due_now(app)


def _summary(app: App, demo: Demo) -> dict[str, Any]:
    with app.unit() as tx:
        people = tx.session.scalar(select(func.count()).select_from(Person))
        rounds = tx.session.scalar(select(func.count()).select_from(IntakeRound))
        rows = tx.session.execute(
            select(Case.workflow, Case.state, func.count()).group_by(Case.workflow, Case.state)
        ).all()
    counts = {(workflow, state): count for workflow, state, count in rows}
    cases = {
        name: {
            state: counts[(name, state)]
            for state in app.workflows[name].states
            if (name, state) in counts
        }
        for name in (APPLICATION, MENTORING)
    }
    return {
        "people": people,
        "intake_rounds": rounds,
        "cases": cases,
        "coordinator": demo.first("coordinator"),
        "committee_member": demo.first("committee"),
        "password": demo.password,
    }


def _open_extra_round(app: App, demo: Demo) -> None:
    """Between the scheduled rounds, an extra one (as coordinators may add), so that a demo
    on any day shows the application form open."""
    stage = demo.stage
    with app.unit() as tx:
        if rounds.current_round(tx.session, stage.now) is None:
            tx.session.add(
                IntakeRound(
                    name=f"Lisavoor {stage.today.year}",
                    opens_at=stage.now - timedelta(days=1),
                    closes_at=stage.now + timedelta(days=14),
                )
            )


def load(settings: Settings) -> dict[str, Any]:
    """Fill an empty, migrated database with the fictional stories; return a short summary."""
    demo = storyfile.read(settings, datetime.now(UTC))
    clock = ManualClock(demo.stage.at(0, time(8)))
    app = bootstrap.build(settings, clock=clock)
    try:
        with app.unit() as tx:
            existing = tx.session.scalar(select(func.count()).select_from(Case)) or 0
            if existing:
                raise Refused(
                    f"the database already holds {existing} cases; load the demo into an "
                    "empty database",
                    rule="empty_database",
                )
            for name, opens, closes in demo.stage.rounds:
                # scheduled_for: the rounds of the schedule, which the worker will not repeat.
                local_day = opens.astimezone(settings.time_zone).date()
                tx.session.add(
                    IntakeRound(
                        name=name, opens_at=opens, closes_at=closes, scheduled_for=local_day
                    )
                )
        for member in demo.staff:
            scenarios.add_staff(
                app,
                name=member.name,
                email=member.email,
                role=member.role,
                language=member.language,
            )
        with app.unit() as tx:  # the demo's staff log in with one shared, printed password
            for member in demo.staff:
                add_user(
                    tx,
                    name=member.name,
                    email=member.email,
                    role=member.role,
                    password=demo.password,
                )
        _play(app, clock, demo)
        _open_extra_round(app, demo)
        return _summary(app, demo)
    finally:
        app.engine.dispose()
