"""Browser tests: Playwright drives Debian's Chromium against the real server.

Each test starts `mentorlus serve` in a subprocess on its own SQLite file and an SMTP sink
(lifecycle.sink) in this process. Mail goes out through the worker's own jobs, run in this
process on the same database, and once per test through the real `mentorlus worker --once`;
people follow the links in the .eml files the sink received. The server runs on the real
clock, so where a step must wait for a time to pass (the first meeting, the interview before
the committee votes) the test waits; a timer hours ahead ("do you go on?", two hours after
the first meeting) is fired by a worker run whose clock is that much ahead.

Chromium comes from Debian (`/usr/bin/chromium`, installed by .ci/run): without it these
tests skip, except under CI=true, where they fail. Screenshots of the key pages go to
tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import cast

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases.accounts import add_user
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import delivery, sink
from lifecycle.schedule import scheduler
from lifecycle.store.models import ActionToken
from tests.conftest import COMMITTEE, COORDINATOR, bring, list_mentor
from tests.processes import free_port

CHROMIUM = Path("/usr/bin/chromium")
# The flags that keep Chromium off the network it cannot reach here (env/machines/python.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
MENTORLUS = Path(sys.executable).parent / "mentorlus"
PASSWORD = "parool-mis-on-piisavalt-pikk"

MENTOR = "mari.mets@example.ee"
OTHER_MENTOR = "peeter.parn@example.ee"
MENTEE = "kati.kask@example.ee"
APPLICANT = "anne.aas@example.ee"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: the browser tests must run in CI")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        expect.set_options(timeout=10_000)
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """A page in a browser context of its own: one person, with their own cookies."""
    contexts: list[BrowserContext] = []

    def make() -> Page:
        context = browser.new_context(locale="et-EE", timezone_id="Europe/Tallinn")
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@dataclass
class Mail:
    to: str
    subject: str
    text: str


@dataclass
class Site:
    """The real server, its database, the SMTP sink and the mail it has received."""

    base_url: str
    env: dict[str, str]
    mail_dir: Path
    app: App
    seen: set[str] = field(default_factory=set)

    def deliver(self, *, worker: bool = False, later: timedelta | None = None) -> list[Mail]:
        """Do what the worker does now; the mail the sink received since the last call.

        worker: run the real `mentorlus worker --once` (a few seconds: the CLI's imports);
        otherwise its two jobs run in this process, on an app of the same database.
        later: as if it were that much later (the "do you go on?" question goes out two
        hours after the first meeting, and the server's clock cannot be moved).
        """
        if worker:
            run = subprocess.run(
                [str(MENTORLUS), "worker", "--once"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run.returncode == 0, f"worker failed:\n{run.stdout}\n{run.stderr}"
        else:
            shift = later or timedelta(0)
            app = bootstrap.build(self.app.settings, clock=lambda: datetime.now(UTC) + shift)
            try:
                scheduler.run_due_now(app)
                # In a thread of its own: Playwright's sync API keeps a loop in this one.
                with ThreadPoolExecutor(1) as pool:
                    pool.submit(lambda: asyncio.run(delivery.run(app, once=True))).result()
            finally:
                app.engine.dispose()
        new = []
        for path in sorted(self.mail_dir.glob("*.eml")):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            message = cast(
                EmailMessage, message_from_bytes(path.read_bytes(), policy=default_policy)
            )
            body = message.get_body(("plain",))
            text = body.get_content() if body is not None else ""
            new.append(Mail(str(message["To"]), str(message["Subject"]), text))
        return new

    def link(self, mails: list[Mail], to: str, action: str) -> str:
        """The link for `action` in the one email among `mails` to this address that has one."""
        found = []
        for mail in mails:
            for url in re.findall(r"https?://[^\s<>\"]+/l/[\w.-]+", mail.text):
                token_id = url.rpartition("/l/")[2].partition(".")[0]
                with self.app.unit() as tx:
                    token = tx.session.get(ActionToken, token_id)
                    if token is not None and token.action == action and to in mail.to:
                        found.append(url)
        summary = [(mail.to, mail.subject) for mail in mails]
        assert len(found) == 1, f"expected one {action} link to {to}, got {found}: {summary}"
        return str(found[0])


@pytest.fixture
def site(tmp_path: Path, sqlite_template: Path) -> Iterator[Site]:
    database = tmp_path / "mentorlus.db"
    shutil.copyfile(sqlite_template, database)
    mail_dir = tmp_path / "mail"
    smtp = sink.start(mail_dir, host="127.0.0.1", port=free_port(), echo=False)
    port = free_port()
    overrides = {
        "MENTORLUS_DATABASE__URL": f"sqlite:///{database}",
        "MENTORLUS_WEB__BASE_URL": f"http://127.0.0.1:{port}",
        "MENTORLUS_SMTP__PORT": str(smtp.port),
        "MENTORLUS_SECRET_KEY": "browser-test-key-" + "x" * 32,
    }
    env = {**os.environ, **overrides}
    app = bootstrap.build(load_settings(environ=overrides))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(MENTORLUS), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(base_url + "/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the server did not start in 30 s"
                time.sleep(0.2)
        yield Site(base_url, env, mail_dir, app)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        smtp.stop()
        app.engine.dispose()


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def submit(page: Page, button: Locator) -> None:
    """Press a form's button and wait for the page the server answers with."""
    with page.expect_navigation():
        button.click()


def vote(page: Page, choice: str) -> None:
    """A committee member's vote in the committee view (one interview on the page)."""
    page.locator(f"input[name=vote][value={choice}]").check()
    page.locator("textarea[name=notes]").fill("Valmis mentoriks.")
    submit(page, page.get_by_role("button", name=re.compile("Hääleta")))


def step_form(page: Page, trigger: str) -> Locator:
    """The console's form for one next step of the case."""
    return page.locator("form.step").filter(
        has=page.locator(f"input[name=trigger][value={trigger}]")
    )


def log_in(page: Page, site: Site, email: str) -> Page:
    page.goto(site.base_url + "/console/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    submit(page, page.get_by_role("button", name=re.compile("Logi sisse|Log in")).last)
    return page


def act(page: Page, trigger: str, **fields: str) -> None:
    """Take one step on a link page: fill its fields (f_<name>), press its button."""
    form = page.locator(f"#step-{trigger}")
    for name, value in fields.items():
        control = form.locator(f"[name=f_{name}]")
        if control.evaluate("node => node.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    submit(page, form.get_by_role("button"))
    expect(page.locator(f"[data-done={trigger}]")).to_be_visible()


def state_of(page: Page) -> str:
    return str(page.locator("[data-state]").get_attribute("data-state"))


def list_mentors(site: Site) -> None:
    """Two listed mentors, brought there through the real steps a month ago."""
    clock = ManualClock(datetime.now(UTC) - timedelta(days=30))
    seeding = bootstrap.build(site.app.settings, clock=clock)
    scenarios.add_staff(seeding, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for index, email in enumerate(COMMITTEE):
        scenarios.add_staff(
            seeding, name=f"Komisjoniliige {index + 1}", email=email, role="committee"
        )
    list_mentor(seeding, clock, MENTOR, "Mari Mets")
    list_mentor(
        seeding,
        clock,
        OTHER_MENTOR,
        "Peeter Pärn",
        topics=["self_care_system", "management_quality"],
    )
    seeding.engine.dispose()


# -- the mentee and the mentor -----------------------------------------------------------------


def test_mentee_and_mentor_carry_a_mentoring_from_the_directory_to_feedback_by_email_links(
    new_page: Callable[[], Page], site: Site
) -> None:
    list_mentors(site)
    site.deliver()  # the mentors' own application mail, out of the way
    zone = site.app.settings.time_zone

    mentee = new_page()
    mentee.goto(site.base_url + "/")
    mentee.locator("form.filters select[name=topic]").select_option("change_at_work")
    mentee.locator("form.filters button").click()
    cards = mentee.locator(".cards .card")
    expect(cards).to_have_count(1)
    expect(cards).to_contain_text("Mari Mets")
    shoot(mentee, "directory")

    cards.get_by_role("link", name="Mari Mets").click()
    expect(mentee.locator("h1")).to_have_text("Mari Mets")
    expect(mentee.locator(".background")).to_contain_text("Lastekaitse")
    shoot(mentee, "mentor-page")

    mentee.locator("a.button[href^='/request']").click()
    question = "Kuidas toetada meeskonda, kui meie osakond liidetakse teisega?"
    mentee.fill("#name", "Kati Kask")
    mentee.fill("#email", MENTEE)
    mentee.fill("#organisation", "Pärnu Sotsiaalkeskus")
    mentee.locator("#region").select_option("Pärnumaa")
    mentee.locator("#topic").select_option("change_at_work")
    mentee.fill("#question", question)
    shoot(mentee, "request-form")
    mentee.locator("form[action='/request'] button").click()
    expect(mentee.locator("h1")).to_have_text("Kinnita pöördumine e-postist")

    # Nothing goes to the mentor before the mentee confirms from the email.
    mentee.goto(site.link(site.deliver(), MENTEE, "confirm_request"))
    expect(mentee.locator("dl")).to_contain_text(question)
    shoot(mentee, "request-confirm")
    mentee.get_by_role("button", name="Kinnitan ja saadan mentorile").click()
    expect(mentee.locator("h1")).to_have_text("Pöördumine on saadetud")
    number = mentee.locator("p.meta").inner_text().strip()
    named = re.fullmatch(r"Pöördumise number: (M-\d+)", number)
    assert named, number
    ref = named.group(1)
    shoot(mentee, "request-sent")

    # The mentor answers from the email the sink received from the real worker.
    mails = site.deliver(worker=True)
    mentor = new_page()
    mentor.goto(site.link(mails, MENTOR, "respond"))
    expect(mentor).to_have_url(f"{site.base_url}/act/{ref}/respond")
    expect(mentor.locator(".question")).to_have_text(question)
    shoot(mentor, "respond-page")
    act(mentor, "accept")
    assert state_of(mentor) == "first_meeting"

    # The first meeting, a few seconds ahead: the server runs on the real clock.
    mails = site.deliver()
    mentor.goto(site.link(mails, MENTOR, "schedule_meeting"))
    meeting_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
    act(
        mentor,
        "schedule_meeting",
        starts_at=meeting_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S"),
        place="Pärnu, Rüütli 25",
    )
    expect(mentor.locator("table")).to_contain_text("Pärnu, Rüütli 25")
    time.sleep(max((meeting_at - datetime.now(UTC)).total_seconds() + 1, 0))

    # Two hours after the meeting both are asked whether they go on; both do.
    site.deliver()
    mails = site.deliver(later=timedelta(hours=2, minutes=5))
    mentee.goto(site.link(mails, MENTEE, "go_on"))
    act(mentee, "proceed")
    assert state_of(mentee) == "first_meeting"
    mentor.goto(site.link(mails, MENTOR, "go_on"))
    act(mentor, "proceed")
    assert state_of(mentor) == "agreement"

    # The mentee drafts a short agreement and signs; the mentor signs from their own email.
    mails = site.deliver()
    mentee.goto(site.link(mails, MENTEE, "agreement"))
    today = datetime.now(zone).date()
    act(
        mentee,
        "draft_agreement",
        goal="Meeskond on liitmiseks valmis.",
        starts_on=today.isoformat(),
        ends_on=(today + timedelta(days=12)).isoformat(),
        meeting_rhythm="kord nädalas",
        fee="tasuta",
    )
    act(mentee, "sign")
    assert state_of(mentee) == "agreement"
    mails = site.deliver()
    mentor.goto(site.link(mails, MENTOR, "agreement"))
    expect(mentor.locator("dl.agreement")).to_contain_text("Meeskond on liitmiseks valmis.")
    act(mentor, "sign")
    assert state_of(mentor) == "active"
    shoot(mentor, "agreement-signed")

    # The question changes: the mentee reframes, both sign version 2 from their emails.
    site.deliver()
    reframed = "Kuidas hoida meeskonna motivatsiooni pärast liitmist?"
    mentee.reload()  # the mentee's page from before the mentor signed
    act(mentee, "reframe", question=reframed)
    assert state_of(mentee) == "reframed"
    mails = site.deliver()
    for page, email in ((mentee, MENTEE), (mentor, MENTOR)):
        page.goto(site.link(mails, email, "agreement"))
        expect(page.locator("dl.agreement")).to_have_attribute("data-version", "2")
        act(page, "sign")
    assert state_of(mentor) == "active"
    history = mentor.locator("ol.history")
    expect(history.locator("del")).to_contain_text(question)
    expect(history.locator("ins")).to_contain_text(reframed)
    shoot(mentor, "agreement-reframed")

    # The agreement ends within two weeks: the reminder's link closes it; both give feedback.
    mails = site.deliver()
    mentee.goto(site.link(mails, MENTEE, "close"))
    act(mentee, "close", outcome="completed")
    assert state_of(mentee) == "closed"
    mails = site.deliver()
    for page, email, rating in ((mentee, MENTEE, "5"), (mentor, MENTOR, "4")):
        page.goto(site.link(mails, email, "feedback"))
        act(page, "give_feedback", rating=rating, comment="Tänan!")
        expect(page.locator("[data-steps=none]")).to_be_visible()


# -- the coordinator and the committee -------------------------------------------------------


def add_staff_logins(site: Site) -> None:
    with site.app.unit() as tx:
        add_user(tx, name="Liis Lepik", email=COORDINATOR, role="coordinator", password=PASSWORD)
        for index, email in enumerate(COMMITTEE):
            add_user(
                tx,
                name=f"Komisjoniliige {index + 1}",
                email=email,
                role="committee",
                password=PASSWORD,
            )


def fits(page: Page) -> bool:
    """Nothing on the page is wider than the screen: it never scrolls sideways."""
    wide: int = page.evaluate("document.documentElement.scrollWidth")
    return wide <= page.evaluate("document.documentElement.clientWidth")


def test_the_mentees_pages_fit_a_320_px_screen_in_both_languages(
    new_page: Callable[[], Page], site: Site
) -> None:
    list_mentors(site)
    site.deliver()
    for language in ("et", "en"):
        mentee = f"kati.{language}@example.ee"
        page = new_page()
        page.set_viewport_size({"width": 320, "height": 800})
        page.goto(f"{site.base_url}/?lang={language}")
        assert fits(page), (language, "directory")
        page.locator(".cards .card a").first.click()
        assert fits(page), (language, "mentor page")
        page.locator("a.button[href^='/request']").click()
        page.fill("#name", "Kati Kask")
        page.fill("#email", mentee)
        page.fill("#organisation", "Pärnu Sotsiaalkeskus")
        page.fill("#question", "Kuidas toetada meeskonda, kui meie osakond liidetakse teisega?")
        submit(page, page.locator("form[action='/request'] button"))
        assert fits(page), (language, "request held")
        page.goto(site.link(site.deliver(), mentee, "confirm_request"))
        assert fits(page), (language, "confirmation page")


def test_coordinator_takes_an_application_through_the_committee_vote_into_the_directory(
    new_page: Callable[[], Page], site: Site
) -> None:
    add_staff_logins(site)
    ref = scenarios.submit_application(
        site.app, scenarios.applicant(APPLICANT, "Anne Aas"), actor=COORDINATOR
    )
    zone = site.app.settings.time_zone
    public = new_page()
    public.goto(site.base_url + "/")
    expect(public.locator(".cards .card")).to_have_count(0)

    page = log_in(new_page(), site, COORDINATOR)
    expect(page).to_have_url(site.base_url + "/console")
    page.get_by_role("link", name=ref).click()
    expect(page.locator("h1")).to_contain_text(ref)
    expect(page.locator("svg.diagram [aria-current=step]")).to_have_count(1)
    shoot(page, "case-page-submitted")

    submit(page, step_form(page, "begin_review").get_by_role("button"))
    expect(page.locator("h1")).to_contain_text("Nõuetele vastavuse kontroll")
    for kind in ("degree", "experience", "credential"):
        form = step_form(page, "verify_evidence")
        form.locator("select[name=f_kind]").select_option(kind)
        submit(page, form.get_by_role("button"))
        expect(page.locator("h1")).to_contain_text("Nõuetele vastavuse kontroll")
    submit(page, step_form(page, "mark_eligible").get_by_role("button"))
    expect(page.locator("h1")).to_contain_text("Vestlus hindamiskomisjoniga")

    # The interview at the first whole minute at least 15 s ahead (the form takes minutes):
    # the committee votes after it, on the server's real clock.
    interview_at = (datetime.now(UTC) + timedelta(seconds=75)).replace(second=0, microsecond=0)
    form = step_form(page, "schedule_interview")
    form.locator("input[name=f_interview_at]").fill(
        interview_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
    )
    form.locator("input[name=f_place]").fill("Tallinn, Lastekodu 12")
    form.locator("input[name=f_committee]").fill(", ".join(COMMITTEE))
    submit(page, form.get_by_role("button"))
    expect(page.locator(".alert")).to_have_count(0)
    expect(page.locator("table").last).to_contain_text("schedule_interview")
    shoot(page, "case-page-interview")

    members = []
    for email in COMMITTEE:
        member = log_in(new_page(), site, email)
        expect(member).to_have_url(site.base_url + "/console/committee")
        expect(member.locator("section.card")).to_contain_text("Anne Aas")
        members.append(member)
    shoot(members[0], "committee-view")
    vote(members[0], "approve")  # too early: the interview has not taken place
    expect(members[0].locator("input[name=vote]")).to_have_count(3)

    wait = (interview_at - datetime.now(UTC)).total_seconds() + 1
    time.sleep(max(wait, 0))
    for member in members:
        vote(member, "approve")
        expect(member.locator("section.card")).to_contain_text("Sinu hääl: approve")
    shoot(members[-1], "committee-view-voted")

    page.reload()
    submit(page, step_form(page, "approve").get_by_role("button"))
    expect(page.locator("h1")).to_contain_text("Mentorite andmebaasis")
    shoot(page, "case-page-listed")

    public.reload()
    expect(public.locator(".cards .card")).to_have_count(1)
    expect(public.locator(".cards")).to_contain_text("Anne Aas")
    shoot(public, "directory-after-approval")

    # The welcome email, with the link to the new mentor's availability page.
    mails = site.deliver(worker=True)
    public.goto(site.link(mails, APPLICANT, "availability"))
    expect(public.locator("[data-state]")).to_have_attribute("data-state", "listed")
    for email in COMMITTEE:
        assert any(email in mail.to for mail in mails), f"no interview email to {email}"


def test_committee_member_who_votes_before_the_interview_is_told_why(
    new_page: Callable[[], Page], site: Site
) -> None:
    add_staff_logins(site)
    clock = ManualClock(datetime.now(UTC) - timedelta(days=5))
    seeding = bootstrap.build(site.app.settings, clock=clock)
    ref = scenarios.submit_application(
        seeding, scenarios.applicant(APPLICANT, "Anne Aas"), actor=COORDINATOR
    )
    bring(seeding, clock, ref, "interview", APPLICANT)
    scenarios.step(
        seeding,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=datetime.now(UTC) + timedelta(days=1),
        place="Tallinn, Lastekodu 12",
        committee=COMMITTEE,
    )
    seeding.engine.dispose()

    member = log_in(new_page(), site, COMMITTEE[0])
    vote(member, "approve")
    expect(member.locator("input[name=vote]")).to_have_count(3)  # not recorded
    expect(member.locator("main")).to_contain_text(
        "the committee decides after the interview", timeout=2_000
    )
