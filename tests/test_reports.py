"""Reports: exact numbers for a known population, small groups hidden, nothing confidential.

The population is told through the real service path (`scenarios`) on a ManualClock, across
two half-years and two intake rounds, on SQLite and PostgreSQL. The numbers below are worked
out by hand from the story; the minimum group size is 1 (every number shown) unless a test
raises it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cli.main import main
from lifecycle.config import ConfigError, Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.reports import tables as reports
from lifecycle.reports.charts import bars, columns
from lifecycle.reports.disclosure import HIDDEN, Table, protect
from lifecycle.schedule import intake
from tests.conftest import COMMITTEE, COORDINATOR, STAFF_PASSWORD, bring

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
M1, M2, M3, M4 = (
    "mari.mets@example.org",
    "kadri.kask@example.org",
    "tiina.tamm@example.org",
    "jaan.juurikas@example.org",
)
VOTE_NOTES = "Komisjoni sisemärkus 7731"
REJECTION = "Sotsiaaltöö kraad puudub 5512"
MEETING_NOTES = "Kohtumise refleksioon 8841"


@dataclass
class Population:
    """What the story left behind that the numbers and the privacy checks need."""

    clock: ManualClock
    secrets: list[str] = field(default_factory=list)  # confidential texts typed in the story
    names: list[str] = field(default_factory=list)  # the mentees' names and addresses
    entered: dict[str, datetime] = field(default_factory=dict)  # when open cases entered


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Every number shown: the exact counts are checked first, suppression on its own."""
    return replace(load_settings(environ={}), database_url=database_url, report_min_group_size=1)


def apply(app: App, email: str, name: str, **overrides: Any) -> str:
    data = scenarios.applicant(email, name, capacity=5, **overrides)
    return scenarios.submit_application(app, data, actor=COORDINATOR)


def met(app: App, clock: ManualClock, ref: str, mentor: str) -> None:
    """The first meeting of an accepted relation arranged and held, as bring_relation does."""
    clock.advance(days=1)
    scenarios.step(
        app, ref, "schedule_meeting", mentor, starts_at=clock.now + timedelta(days=3), place="x"
    )
    clock.advance(days=4)


@pytest.fixture
def population(app: App, clock: ManualClock) -> Population:
    """Two intake rounds, four mentors, eight requests, five ratings — over 2026-H2 and 2027-H1.

    Autumn round 2026: M1-M3 listed, one not eligible, one withdrawn, one never answers the
    information request. Then six requests (2026-H2): two completed with feedback, one active,
    one declined, one expired, one not continued after the first meeting. Spring round 2027:
    M4 listed, one declined by the committee; two requests (2027-H1), one of them by a mentee
    served before.
    """
    story = Population(clock)
    with app.unit() as tx:
        intake.create_round(
            tx, name="Sügisvoor 2026", opens="2026-09-01T09:00", closes="2026-10-01T09:00"
        )
        intake.create_round(
            tx, name="Kevadvoor 2027", opens="2027-03-01T09:00", closes="2027-03-31T09:00"
        )
    autumn = {
        M1: apply(app, M1, "Mari Mets", region="Tartumaa"),
        M2: apply(app, M2, "Kadri Kask", region="Harjumaa", topics=["career", "self_care_system"]),
        M3: apply(app, M3, "Tiina Tamm", region="Tartumaa", topics=["career"]),
    }
    # All six are entered while the round is open; each is then moved on, one after another.
    rejected = apply(app, "peeter.pold@example.org", "Peeter Põld")
    withdrawn = apply(app, "olev.org@example.org", "Olev Org")
    silent = apply(app, "anne.aas@example.org", "Anne Aas")
    for email, ref in autumn.items():
        bring(app, clock, ref, "listed", email)
        story.entered[email] = clock.now
    clock.advance(days=1)
    scenarios.step(app, rejected, "begin_review", COORDINATOR)
    clock.advance(days=1)
    scenarios.step(app, rejected, "mark_ineligible", COORDINATOR, reason=REJECTION)
    bring(app, clock, withdrawn, "withdrawn", "olev.org@example.org")
    bring(app, clock, silent, "awaiting_info", "anne.aas@example.org")
    clock.advance(days=30)
    scenarios.step(app, silent, "withdraw", None)  # as the 30-day timer does

    def request(number: int, mentor: str, topic: str, region: str, state: str) -> str:
        email, name = f"mentee{number}@example.net", f"Juhendatav Number{number}"
        question = f"Salajane küsimus {len(story.secrets)}: kuidas edasi?"
        story.secrets.append(question)
        story.names += [email, name]
        data = scenarios.mentee(email, name, mentor, topic=topic, region=region, question=question)
        ref = scenarios.submit_request(app, data)
        scenarios.bring_relation(app, clock, ref, state, mentor=mentor, mentee_email=email)
        return ref

    def rate(ref: str, email: str, rating: int, comment: str = "") -> None:
        scenarios.step(app, ref, "give_feedback", email, rating=rating, comment=comment)
        if comment:
            story.secrets.append(comment)

    first = request(1, M1, "career", "Pärnumaa", "closed")
    rate(first, "mentee1@example.net", 5, "Tagasiside A 4417")
    rate(first, M1, 4, "Tagasiside B 4418")
    second = request(2, M1, "career", "Pärnumaa", "closed")
    rate(second, "mentee2@example.net", 4)
    rate(second, M1, 5)
    active = request(3, M2, "self_care_system", "Harjumaa", "active")
    story.entered["active"] = clock.now
    clock.advance(hours=1)
    scenarios.step(app, active, "log_meeting", M2, starts_at=clock.now, notes=MEETING_NOTES)
    request(4, M2, "career", "Harjumaa", "declined")
    request(5, M3, "career", "Tartumaa", "expired")
    stopped = request(6, M3, "career", "Pärnumaa", "first_meeting")
    met(app, clock, stopped, M3)
    clock.advance(days=1)
    scenarios.step(app, stopped, "discontinue", "mentee6@example.net")
    rate(stopped, "mentee6@example.net", 2, "Tagasiside C 4419")
    assert clock.now < datetime(2026, 12, 31, tzinfo=UTC)

    clock.now = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)  # 10:00 in Tallinn: the spring round
    listed = apply(app, M4, "Jaan Juurikas", region="Viljandimaa")
    declined = apply(app, "urve.uus@example.org", "Urve Uus")
    bring(app, clock, listed, "listed", M4)
    story.entered[M4] = clock.now
    bring(app, clock, declined, "interview", "urve.uus@example.org")
    clock.advance(days=1)
    scenarios.step(
        app,
        declined,
        "schedule_interview",
        COORDINATOR,
        interview_at=clock.now + timedelta(days=5),
        place="Tallinn",
        committee=COMMITTEE,
    )
    clock.advance(days=5, hours=2)
    for member in COMMITTEE:
        scenarios.step(app, declined, "record_vote", member, vote="decline", notes=VOTE_NOTES)
    clock.advance(days=1)
    scenarios.step(app, declined, "decline", COORDINATOR, reason=REJECTION)

    request(7, M4, "career", "Pärnumaa", "agreement")
    story.entered["agreement"] = clock.now
    again = request(1, M4, "change_at_work", "Pärnumaa", "first_meeting")
    story.entered["first_meeting"] = clock.now
    met(app, clock, again, M4)
    # The drafted agreements' goal and rhythm, the notes, the votes' notes, the reasons.
    story.secrets += ["Selge karjääriplaan", "kord kuus", MEETING_NOTES, VOTE_NOTES, REJECTION]
    clock.now = datetime(2027, 4, 15, 9, 0, tzinfo=UTC)
    return story


def table(app: App, name: str) -> Table:
    with app.unit() as tx:
        return reports.build(tx, name)


def rows(app: App, name: str) -> list[tuple[Any, ...]]:
    return table(app, name).rows


def days(since: datetime, until: datetime) -> float:
    return (until - since).total_seconds() / 86400


def median(values: list[float]) -> float:
    ordered, middle = sorted(values), len(values) // 2
    return (ordered[middle] + ordered[~middle]) / 2


def with_minimum(app: App, minimum: int) -> App:
    """The same database and clock, read with another minimum group size."""
    settings = replace(app.settings, report_min_group_size=minimum)
    return bootstrap.build(settings, clock=app.clock)


# -- the numbers, on SQLite and PostgreSQL ------------------------------------------------------


def test_mentors_are_counted_by_state_at_the_end_of_each_half_year(
    app: App, population: Population
) -> None:
    report = table(app, "mentors")
    assert report.columns[0] == "half_year"
    assert [dict(zip(report.columns, row, strict=True)) for row in report.rows] == [
        {"half_year": "2026-H2", "submitted": 0, "eligibility": 0, "awaiting_info": 0,
         "interview": 0, "listed": 3, "paused": 0, "rejected": 1, "withdrawn": 2, "retired": 0},
        {"half_year": "2027-H1", "submitted": 0, "eligibility": 0, "awaiting_info": 0,
         "interview": 0, "listed": 4, "paused": 0, "rejected": 2, "withdrawn": 2, "retired": 0},
    ]  # fmt: skip


def test_each_intake_round_shows_its_funnel_and_why_applications_ended(
    app: App, population: Population
) -> None:
    report = table(app, "rounds")
    assert report.columns == (
        "round", "opens", "submitted", "eligible", "interviewed", "listed",
        "not_eligible", "declined", "withdrawn", "no_answer", "in_progress",
    )  # fmt: skip
    assert report.rows == [
        ("Sügisvoor 2026", "2026-09-01", 6, 3, 3, 3, 1, 0, 1, 1, 0),
        ("Kevadvoor 2027", "2027-03-01", 2, 2, 2, 1, 0, 1, 0, 0, 0),
    ]


def test_the_relations_funnel_counts_each_half_years_requests_and_all_of_them(
    app: App, population: Population
) -> None:
    report = table(app, "relations")
    assert report.columns == (
        "half_year", "requested", "first_meeting", "agreement", "completed", "ended_early",
        "not_continued", "cancelled", "declined", "expired", "open",
    )  # fmt: skip
    assert report.rows == [
        ("2026-H2", 6, 4, 3, 2, 0, 1, 0, 1, 1, 1),
        ("2027-H1", 2, 2, 1, 0, 0, 0, 0, 0, 0, 2),
        ("all", 8, 6, 4, 2, 0, 1, 0, 1, 1, 3),
    ]


def test_people_served_are_distinct_mentees_who_met_per_half_year(
    app: App, population: Population
) -> None:
    # 2027-H1: the active relation goes on, the seventh mentee and the first one again.
    assert rows(app, "served") == [("2026-H2", 4, 4, 3, 4), ("2027-H1", 3, 1, 2, 3)]
    with app.unit() as tx:
        assert reports.summary(tx) == {"mentors_listed": 4, "people_served": 5, "cases_open": 3}


def test_durations_give_the_median_days_in_each_state_and_who_waits_now(
    app: App, population: Population
) -> None:
    now, entered = population.clock.now, population.entered
    listed_now = median([days(entered[email], now) for email in (M1, M2, M3, M4)])
    # Submitted: each autumn application waited for those reviewed before it.
    submitted = median([1, 11 + 1 / 12, 21 + 1 / 6, 31.25, 33.25, 34.25, 1, 11 + 1 / 12])
    assert rows(app, "durations") == [
        ("mentor_application", "submitted", 8, round(submitted, 1), 0, None),
        ("mentor_application", "eligibility", 7, 2.0, 0, None),
        ("mentor_application", "awaiting_info", 1, 30.0, 0, None),
        ("mentor_application", "interview", 5, 7.1, 0, None),
        ("mentor_application", "listed", 0, None, 4, round(listed_now, 1)),
        ("mentor_application", "paused", 0, None, 0, None),
        ("mentoring", "requested", 8, 1.0, 0, None),
        ("mentoring", "first_meeting", 5, 6.0, 1, round(days(entered["first_meeting"], now), 1)),
        ("mentoring", "agreement", 3, 2.0, 1, round(days(entered["agreement"], now), 1)),
        ("mentoring", "active", 2, 1.0, 1, round(days(entered["active"], now), 1)),
        ("mentoring", "reframed", 0, None, 0, None),
        ("mentoring", "first_meeting_after", 6, 5.0, None, None),
    ]


def test_topics_and_regions_count_mentors_and_requests(app: App, population: Population) -> None:
    assert rows(app, "topics") == [
        ("career", 4, 6, 4, 2),
        ("self_care_system", 1, 1, 1, 0),
        ("management_quality", 0, 0, 0, 0),
        ("specific_situation", 0, 0, 0, 0),
        ("best_practice_network", 0, 0, 0, 0),
        ("change_at_work", 2, 1, 1, 0),
    ]
    assert rows(app, "regions") == [
        ("Harjumaa", 1, 2, 1, 0),
        ("Pärnumaa", 0, 5, 5, 2),
        ("Tartumaa", 2, 1, 0, 0),
        ("Viljandimaa", 1, 0, 0, 0),
    ]


def test_feedback_scores_by_party_and_topic(app: App, population: Population) -> None:
    no_ratings = (0, None, 0, 0, 0, 0, 0)
    assert rows(app, "feedback") == [
        ("all", 5, 4.0, 0, 1, 0, 2, 2),
        ("mentee", 3, 3.67, 0, 1, 0, 1, 1),
        ("mentor", 2, 4.5, 0, 0, 0, 1, 1),
        ("career", 5, 4.0, 0, 1, 0, 2, 2),
        *[(topic, *no_ratings) for topic in ("self_care_system", "management_quality")],
        *[(topic, *no_ratings) for topic in ("specific_situation", "best_practice_network")],
        ("change_at_work", *no_ratings),
    ]


def test_an_empty_database_gives_empty_reports(app: App) -> None:
    with app.unit() as tx:
        built = {name: reports.build(tx, name) for name in reports.REPORTS}
        assert reports.summary(tx) == {"mentors_listed": 0, "people_served": 0, "cases_open": 0}
    assert built["mentors"].rows == built["served"].rows == built["rounds"].rows == []
    assert built["relations"].rows == [("all", *[0] * 10)]
    assert [row[2] for row in built["durations"].rows] == [0] * 12


def test_a_request_just_after_midnight_on_new_years_day_in_tallinn_counts_in_the_new_half_year(
    app: App, clock: ManualClock
) -> None:
    ref = apply(app, M1, "Mari Mets")
    bring(app, clock, ref, "listed", M1)
    clock.now = datetime(2026, 12, 31, 22, 30, tzinfo=UTC)  # 00:30 on 1 January, local time
    scenarios.submit_request(app, scenarios.mentee("uus@example.net", "Uus Aasta", M1))
    assert [row[:2] for row in rows(app, "relations")] == [
        ("2026-H2", 0),
        ("2027-H1", 1),
        ("all", 1),
    ]


# -- small groups ---------------------------------------------------------------------------


def test_counts_below_the_minimum_are_hidden_and_one_more_where_a_total_would_tell() -> None:
    grid = [[6, 1, 5], [3, 0, 3]]
    # Row 0's parts (columns 1, 2) add up to column 0: hiding 1 alone would leave 6 - 5.
    assert protect(grid, [[(0, 1), (0, 2)]], 5) == [
        [6, "<5", HIDDEN],
        ["<5", 0, "<5"],
    ]
    # Nothing small: nothing hidden; a zero is never hidden (it identifies nobody).
    assert protect([[5, 0, 7]], [[(0, 0), (0, 1), (0, 2)]], 5) == [[5, 0, 7]]
    # A group whose only other counts are zero keeps them: the total is small, hidden itself.
    assert protect([[2, 0]], [[(0, 0), (0, 1)]], 5) == [["<5", 0]]
    # Hiding for one group can make another group need one more: it goes on until none does.
    chained = protect([[1, 9, 8], [7, 6, 0]], [[(0, 0), (0, 1)], [(0, 1), (1, 1)]], 5)
    assert chained == [["<5", HIDDEN, 8], [7, HIDDEN, 0]]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_with_a_minimum_of_three_small_groups_are_hidden_and_not_derivable(
    app: App, population: Population
) -> None:
    three = with_minimum(app, 3)
    assert rows(three, "rounds")[1] == (
        "Kevadvoor 2027",
        "2027-03-01",
        *["<3"] * 4,
        0,
        "<3",
        0,
        0,
        0,
    )
    # The mentors' two ratings are few; the mentees' three would give them away (all - mentees).
    feedback = {row[0]: row for row in rows(three, "feedback")}
    assert feedback["mentor"] == ("mentor", "<3", None, 0, 0, 0, "<3", "<3")
    assert feedback["mentee"][:3] == ("mentee", HIDDEN, 3.67)
    assert feedback["all"][:3] == ("all", 5, 4.0)
    # Regions where no count reaches three are shown together, their names nowhere.
    assert rows(three, "regions") == [("Pärnumaa", 0, 5, HIDDEN, "<3"), ("*", 4, 3, "<3", 0)]
    # The spring half-year's two requests are hidden, so the autumn's six are too (all - 6).
    relations = {row[0]: row for row in rows(three, "relations")}
    assert relations["2027-H1"][1] == "<3" and relations["2026-H2"][1] == HIDDEN
    assert relations["all"][1] == 8
    # Medians of fewer than three stays are left out; their counts are hidden.
    durations = {row[1]: row for row in rows(three, "durations")}
    assert durations["awaiting_info"][2:4] == ("<3", None)
    assert durations["interview"][2:4] == (5, 7.1)
    with three.unit() as tx:
        assert reports.summary(tx) == {"mentors_listed": 4, "people_served": 5, "cases_open": 3}
    three.engine.dispose()


def test_the_minimum_group_size_is_read_from_the_config_and_must_be_at_least_one() -> None:
    assert load_settings(environ={}).report_min_group_size == 5
    environ = {"MENTORLUS_REPORTS__MIN_GROUP_SIZE": "10"}
    assert load_settings(environ=environ).report_min_group_size == 10
    with pytest.raises(ConfigError, match=r"reports\.min_group_size"):
        load_settings(environ={"MENTORLUS_REPORTS__MIN_GROUP_SIZE": "0"})


# -- charts ---------------------------------------------------------------------------------


def test_a_hidden_count_draws_no_bar_and_says_so() -> None:
    drawn = bars([("a", 10, "10"), ("b", "<5", "<5"), ("c", None, "—")], title="T <&>")
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', drawn)]
    assert widths[0] > 0 and widths[1:] == [0.0, 0.0]
    assert ">&lt;5<" in drawn and "<title>T &lt;&amp;&gt;</title>" in drawn


def test_stacked_columns_draw_each_series_with_a_legend() -> None:
    drawn = columns(["2026-H2", "2027-H1"], [("listed", [3, 4]), ("paused", [0, "<5"])], title="M")
    assert drawn.startswith("<svg") and drawn.endswith("</svg>")
    assert ">listed<" in drawn and ">paused<" in drawn and ">4 / &lt;5<" in drawn


# -- the console page, the CSV and the CLI --------------------------------------------------


def login(client: TestClient, email: str) -> None:
    token = CSRF.search(client.get("/console/login").text)
    assert token
    answer = client.post(
        "/console/login", data={"csrf": token.group(1), "email": email, "password": STAFF_PASSWORD}
    )
    assert answer.status_code == 303


REPORT_URLS = ["/console/reports", *(f"/console/reports/{name}.csv" for name in reports.REPORTS)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_reports_are_for_coordinators_only(web: TestClient) -> None:
    for url in REPORT_URLS:
        answer = web.get(url)
        assert answer.status_code == 303, url
        assert answer.headers["location"] == f"/console/login?next={url}"
    login(web, COMMITTEE[0])
    for url in REPORT_URLS:
        assert web.get(url).status_code == 403, url


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_reports_page_shows_the_numbers_and_charts_and_nothing_confidential(
    app: App, web: TestClient, population: Population
) -> None:
    login(web, COORDINATOR)
    assert 'href="/console/reports"' in web.get("/console").text
    page = web.get("/console/reports")
    assert page.status_code == 200
    html = page.text
    assert html.count("<svg") >= 7
    for name in reports.REPORTS:
        assert f'href="/console/reports/{name}.csv"' in html
    assert "<dd>4</dd>" in html and "<dd>5</dd>" in html  # mentors listed, people served
    assert "Sügisvoor 2026" in html and "Viljandimaa" in html
    assert "Mentorid olekute kaupa ajas" in html  # Estonian by default
    assert "Mentors by state over time" in web.get("/console/reports?lang=en").text
    for text in population.secrets + population.names:
        assert text not in html, text
    for name in reports.REPORTS:
        answer = web.get(f"/console/reports/{name}.csv")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        parsed = list(csv.reader(io.StringIO(answer.text)))
        assert tuple(parsed[0]) == table(app, name).columns
        for text in population.secrets + population.names:
            assert text not in answer.text, (name, text)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_round_name_with_markup_is_escaped_in_the_page_and_its_chart(
    app: App, web: TestClient
) -> None:
    with app.unit() as tx:
        intake.create_round(
            tx,
            name="<script>alert(1)</script>",
            opens="2026-08-01T09:00",
            closes="2026-08-20T09:00",
        )
    apply(app, M1, "Mari Mets")
    login(web, COORDINATOR)
    html = web.get("/console/reports").text
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_report_command_prints_a_table_csv_or_json(
    app: App,
    population: Population,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", database_url)
    monkeypatch.setenv("MENTORLUS_REPORTS__MIN_GROUP_SIZE", "3")
    assert main(["report", "rounds", "--csv"]) == 0
    out = capsys.readouterr().out
    assert list(csv.reader(io.StringIO(out))) == [
        ["round", "opens", "submitted", "eligible", "interviewed", "listed",
         "not_eligible", "declined", "withdrawn", "no_answer", "in_progress"],
        ["Sügisvoor 2026", "2026-09-01", "6", "3", "3", "3", "<3", "0", "<3", "<3", "0"],
        ["Kevadvoor 2027", "2027-03-01", "<3", "<3", "<3", "<3", "0", "<3", "0", "0", "0"],
    ]  # fmt: skip
    assert main(["report", "rounds"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["round", "opens", "submitted", "eligible", "interviewed",
                                "listed", "not_eligible", "declined", "withdrawn",
                                "no_answer", "in_progress"]  # fmt: skip
    assert lines[1].startswith("Sügisvoor 2026  2026-09-01  6")
    assert main(["--json", "report", "feedback"]) == 0
    feedback = json.loads(capsys.readouterr().out)
    assert feedback[0] == {
        "group": "all", "ratings": 5, "mean": 4.0,
        "r1": 0, "r2": "<3", "r3": 0, "r4": "<3", "r5": "<3",
    }  # fmt: skip
    for name in reports.REPORTS:
        assert main(["report", name, "--csv"]) == 0
        out = capsys.readouterr().out
        for text in population.secrets + population.names:
            assert text not in out, (name, text)
    with pytest.raises(SystemExit):
        main(["report", "nonsense"])
