"""Fictional demo data, told through the real service path.

`load` builds its own app on a manual clock that starts about 200 days ago, opens the intake
rounds of that time and plays invented stories — mentor applications and mentoring relations —
step by step, each step in its own transaction at the moment the clock shows. The stories run
interleaved in time order; the last steps are a few days before the real now. Every person and
organisation here is invented.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases.accounts import add_user
from lifecycle.config import Settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock, applicant, mentee
from lifecycle.errors import Refused
from lifecycle.schedule import scheduler
from lifecycle.store.models import APPLICATION, MENTORING, Case, IntakeRound, Person
from lifecycle.workflows import rounds

DAYS_BACK = 200  # the stories begin this many days before today
COORDINATORS = [
    ("Triinu Allik", "triinu.allik@example.ee"),
    ("Mihkel Sarapuu", "mihkel.sarapuu@example.ee"),
]
COMMITTEE = [
    ("Heiki Sild", "heiki.sild@example.ee", "et"),
    ("Riina Lõhmus", "riina.lohmus@example.ee", "et"),
    ("Aino Pajula", "aino.pajula@example.ee", "en"),
]
COORDINATOR = COORDINATORS[0][1]
DEMO_PASSWORD = "demo-parool-2026"
PANEL = [email for _, email, _ in COMMITTEE]
VOTE_NOTES = {
    "approve": "Selge motivatsioon ja tugev praktika.",
    "decline": "Võiks enne koguda rohkem juhendamise kogemust.",
    "recuse": "Töötasime varem samas asutuses.",
}
# The mentors the relations below ask for.
KADRI, MARGUS, ANNELI = (
    "kadri.kuusk@example.org",
    "margus.mand@example.org",
    "anneli.oja@example.ee",
)
PRIIT, TIINA, KRISTJAN = (
    "priit.kask@example.org",
    "tiina.rebane@example.ee",
    "kristjan.parn@example.org",
)
URMAS, ENE = "urmas.tamm@example.ee", "ene.kivi@example.org"

# One step of a story: when, who ("applicant", "mentor", "mentee", "coordinator", "system"
# or a committee member's email), the trigger and its fields. The first step opens the case.
Step = tuple[datetime, str, str, dict[str, Any]]


@dataclass
class Story:
    data: dict[str, Any]
    steps: list[Step]
    ref: str = ""


class Stage:
    """The calendar the stories are written against: day 0 is DAYS_BACK days before today."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.zone = zone = settings.time_zone
        self.now = now
        self.today = now.astimezone(zone).date()
        self.base = self.today - timedelta(days=DAYS_BACK)
        self.rounds = _rounds(settings, self.at(0, "00:00"), now)

    def at(self, day: int, hhmm: str = "10:00") -> datetime:
        """Day `day` of the story at a local wall-clock time, in UTC."""
        local = datetime.combine(self.date(day), time.fromisoformat(hhmm), self.zone)
        return local.astimezone(UTC)

    def date(self, day: int) -> date:
        return self.base + timedelta(days=day)

    def do(self, day: int, hhmm: str, who: str, trigger: str, **values: Any) -> Step:
        return (self.at(day, hhmm), who, trigger, values)

    def day_of(self, moment: datetime) -> int:
        return (moment.astimezone(self.zone).date() - self.base).days

    def round_open(self, moment: datetime) -> bool:
        return any(opens <= moment < closes for _, opens, closes in self.rounds)


def _rounds(
    settings: Settings, start: datetime, now: datetime
) -> list[tuple[str, datetime, datetime]]:
    """The rounds of the configured schedule (spring and autumn): from the last one that
    opened before the stories begin up to the next one still to come."""
    rounds = []
    for year in range(start.year - 1, now.year + 2):
        for month, day in settings.intake_opens:
            name = "Kevadvoor" if month < 7 else "Sügisvoor"
            opens = datetime(year, month, day, settings.intake_open_hour, tzinfo=settings.time_zone)
            closes = opens + settings.intake_length
            rounds.append((f"{name} {year}", opens.astimezone(UTC), closes.astimezone(UTC)))
    first = max(i for i, (_, opens, _) in enumerate(rounds) if opens <= start)
    upcoming = min(i for i, (_, opens, _) in enumerate(rounds) if opens > now)
    return rounds[first : upcoming + 1]


# -- mentor applications -----------------------------------------------------------------------
# The stories below are data: laid out by hand, one step per line (fmt: off).
# fmt: off


def _credential(kind: str, issuer: str, year: int, valid_until: str = "") -> dict[str, Any]:
    return {"kind": kind, "issuer": issuer, "year": year, "valid_until": valid_until or None}


def _listing(s: Stage, day: int, interview: datetime, **votes: str) -> list[Step]:
    """Review, verified evidence, eligibility, the committee interview, votes and approval."""
    voted = interview + timedelta(minutes=50)
    place = "Videokõne (link kutses)"
    return [
        s.do(day, "09:30", "coordinator", "begin_review"),
        *[s.do(day + 2, "11:00", "coordinator", "verify_evidence", kind=kind) for kind in
          ("degree", "experience", "credential")],
        s.do(day + 2, "11:20", "coordinator", "mark_eligible"),
        s.do(day + 3, "10:00", "coordinator", "schedule_interview", interview_at=interview,
             place=place, committee=PANEL),
        *[
            (voted, member, "record_vote", {"vote": vote, "notes": VOTE_NOTES[vote]})
            for member in PANEL
            for vote in [votes.get(member.split(".")[0], "approve")]
        ],
        (voted + timedelta(hours=20), "coordinator", "approve", {}),
    ]


def _founding_mentors(s: Stage) -> list[Story]:
    """The first cohort, listed by day 17; one pauses later, one retires."""
    valid_until = (s.today + timedelta(days=900)).isoformat()
    return [
        Story(
            applicant(
                KADRI, "Kadri Kuusk", organisation="Tartu Laste Turvakodu", region="Tartumaa",
                years_in_social_field=16,
                topics=["self_care_system", "management_quality", "change_at_work"],
                background="Turvakodu juhataja, varem lastekaitsespetsialist; meeskonna enesehoid.",
                regions=["Tartumaa", "Jõgevamaa"], capacity=3,
                fee_note="Esimene kohtumine tasuta, edasi kokkuleppel.",
            ),
            [s.do(1, "10:00", "applicant", "submit"), *_listing(s, 3, s.at(15, "10:00"))],
        ),
        Story(
            applicant(
                MARGUS, "Margus Mänd", organisation="Jõhvi Päevakeskus", region="Ida-Virumaa",
                degree_level="bachelor", degree_field="sotsiaaltöö (rakenduskõrgharidus)",
                years_in_social_field=9, topics=["specific_situation", "best_practice_network"],
                background="Täiskasvanute hoolekanne ja võrgustikutöö Ida-Virumaal.",
                regions=["Ida-Virumaa", "Lääne-Virumaa"], languages=["et"], formats=["in_person"],
                fee_note="Tasuta.",
                credentials=[_credential("coach", "Põhjaranniku Coachingukool", 2020)],
            ),
            [
                s.do(1, "15:40", "applicant", "submit"),
                *_listing(s, 4, s.at(15, "11:00"), aino="decline"),
            ],
        ),
        Story(
            applicant(
                ANNELI, "Anneli Oja", organisation="Keila Sotsiaalmaja", region="Harjumaa",
                years_in_social_field=21,
                topics=["career", "management_quality", "best_practice_network"],
                background="Valla sotsiaalosakonna juht 12 aastat; uute juhtide toetamine.",
                regions=["Harjumaa", "Raplamaa"], languages=["et"], formats=["online"],
                fee_note="Kokkuleppel, tavaliselt 35 € kohtumine.",
                credentials=[_credential("mentor", "Mentorluse Arengukeskus", 2019)],
            ),
            [s.do(2, "09:15", "applicant", "submit"), *_listing(s, 4, s.at(15, "13:00"))],
        ),
        Story(
            applicant(
                PRIIT, "Priit Kask", organisation="Pärnumaa Perekeskus", region="Pärnumaa",
                degree_level="doctorate", years_in_social_field=18,
                topics=["management_quality", "self_care_system", "change_at_work"],
                background="Perekeskuse juht ja õppejõud; organisatsiooni enesehoiusüsteemid.",
                regions=["Pärnumaa"], capacity=1,
                fee_note="Juhtidele 50 € kohtumine, sotsiaaltöötajatele tasuta.",
                credentials=[_credential("supervisor", "Eesti Supervisiooni ja Coachingu Ühing",
                                         2012, valid_until)],
            ),
            [s.do(2, "13:00", "applicant", "submit"), *_listing(s, 5, s.at(15, "14:30"))],
        ),
        Story(
            applicant(
                TIINA, "Tiina Rebane", organisation="Rakvere Sotsiaalkeskus",
                region="Lääne-Virumaa", degree_level="bachelor", years_in_social_field=7,
                topics=["career", "specific_situation"],
                background="Noorte ja perede nõustamine; karjääriplaneerimine algajatele.",
                regions=["Lääne-Virumaa"], fee_note="Tasuta.",
                credentials=[_credential("coach", "Virumaa Coachingukool", 2021)],
            ),
            [
                s.do(2, "20:05", "applicant", "submit"),
                s.do(4, "09:00", "coordinator", "begin_review"),
                s.do(4, "09:20", "coordinator", "request_info",
                     message="Palun saatke coachi tunnistuse koopia."),
                s.do(5, "21:10", "applicant", "provide_info", message="Tunnistus on lisatud."),
                *_listing(s, 6, s.at(16, "10:00"))[1:],  # already in review
            ],
        ),
        Story(
            applicant(
                KRISTJAN, "Kristjan Pärn", language="en", organisation="MTÜ Lõuna Perede Tugi",
                region="Viljandimaa", degree_field="social work (MSocSc)",
                years_in_social_field=12,
                topics=["change_at_work", "career", "best_practice_network"],
                background="Family support in NGOs and cross-border projects; works in English.",
                regions=["Viljandimaa", "Valgamaa"], languages=["en", "et"], formats=["online"],
                fee_note="Free of charge for association members; otherwise by agreement.",
                credentials=[_credential("mentor", "Nordic Mentoring Institute", 2017)],
            ),
            [s.do(3, "11:00", "applicant", "submit"), *_listing(s, 6, s.at(16, "11:30"))],
        ),
        Story(
            applicant(
                URMAS, "Urmas Tamm", organisation="Kuressaare Hooldekodu", region="Saaremaa",
                years_in_social_field=25, topics=["self_care_system", "specific_situation"],
                background="Hooldekodu juhataja; töötajate läbipõlemise ennetamine.",
                regions=["Saaremaa", "Hiiumaa"], formats=["in_person"], fee_note="Kokkuleppel.",
            ),
            [
                s.do(3, "16:00", "applicant", "submit"),
                *_listing(s, 7, s.at(16, "13:00"), riina="recuse"),
                s.do(124, "08:45", "applicant", "pause",
                     reason="Suvepuhkus ja töökoormus; jätkan sügisel."),
            ],
        ),
        Story(
            applicant(
                ENE, "Ene Kivi", organisation="Valga Hoolekandeasutus", region="Valgamaa",
                years_in_social_field=32, topics=["career", "best_practice_network"],
                background="Üle 30 aasta sotsiaaltööd, neist 15 juhina; noorte kolleegide tugi.",
                regions=["Valgamaa", "Tartumaa"], capacity=1,
                fee_note="Tasuta — annan oma kogemust edasi.",
                credentials=[_credential("mentor", "Mentorluse Arengukeskus", 2015)],
            ),
            [
                s.do(4, "10:30", "applicant", "submit"),
                *_listing(s, 7, s.at(16, "14:30")),
                s.do(170, "12:00", "applicant", "retire", reason="Jään pensionile."),
            ],
        ),
    ]


def _round_applicants(s: Stage) -> list[Story]:
    """Two applications by the public form in the last round that opened by day 188."""
    day = max(s.day_of(opens) for _, opens, _ in s.rounds if s.day_of(opens) <= 188)
    return [
        Story(
            applicant(
                "rein.lill@example.org", "Rein Lill", organisation="Haapsalu Noortekeskus",
                region="Läänemaa", years_in_social_field=11,
                topics=["career", "specific_situation"], credentials=[],  # no certificate
                background="Noorsoo- ja sotsiaaltöö, riskinoorte juhtumikorraldus.",
            ),
            [
                s.do(day + 2, "20:15", "applicant", "submit"),
                s.do(day + 4, "09:00", "coordinator", "begin_review"),
                s.do(day + 6, "10:00", "coordinator", "mark_ineligible",
                     reason="Mentori-, coachi- või supervisoritunnistus puudub."),
            ],
        ),
        Story(
            applicant(
                "marju.aas@example.ee", "Marju Aas", organisation="Põlva Tugikeskus",
                region="Põlvamaa", degree_level="bachelor", years_in_social_field=6,
                topics=["specific_situation"], background="Erihoolekanne ja toetatud elamine.",
                formats=["in_person"],
            ),
            [
                s.do(day + 1, "13:00", "applicant", "submit"),
                s.do(day + 4, "09:30", "coordinator", "begin_review"),
                s.do(day + 5, "10:00", "coordinator", "request_info",
                     message="Palun lisage tööstaaži kinnitus."),
                s.do(day + 8, "18:00", "applicant", "withdraw",
                     reason="Asun uuele ametikohale ega jõua praegu mentorlusega tegeleda."),
            ],
        ),
    ]


def _recent_applicants(s: Stage) -> list[Story]:
    """Applications still under way: submitted, in review, awaiting info, interview ahead."""
    return [
        Story(
            applicant(
                "liina.vaher@example.org", "Liina Vaher", organisation="Paide Sotsiaalmaja",
                region="Järvamaa", years_in_social_field=10,
                topics=["change_at_work", "self_care_system"],
                background="Sotsiaaltöötajate kovisioonigruppide juhtimine.",
            ),
            [s.do(198, "09:40", "applicant", "submit")],
        ),
        Story(
            applicant(
                "andres.kuusik@example.ee", "Andres Kuusik",
                organisation="Tallinna Kodutute Varjupaik", region="Harjumaa",
                degree_level="bachelor", years_in_social_field=8,
                topics=["specific_situation", "best_practice_network"],
                background="Kodutute tugi ja tänavatöö; võrgustikukohtumised.", capacity=1,
            ),
            [
                s.do(189, "19:30", "applicant", "submit"),
                s.do(193, "09:00", "coordinator", "begin_review"),
                s.do(195, "14:00", "coordinator", "verify_evidence", kind="degree"),
            ],
        ),
        Story(
            applicant(
                "kaie.org@example.org", "Kaie Org", organisation="Võru Perekeskus",
                region="Võrumaa", years_in_social_field=9, topics=["career", "self_care_system"],
                background="Asendushoolduse ja perede toetamine Võrumaal.",
                credentials=[_credential("coach", "Lõuna-Eesti Coachingukool", 2022)],
            ),
            [
                s.do(188, "12:00", "applicant", "submit"),
                s.do(192, "10:00", "coordinator", "begin_review"),
                s.do(194, "11:00", "coordinator", "request_info",
                     message="Palun lisage coachi tunnistuse koopia ja kehtivusaeg."),
            ],
        ),
        Story(
            applicant(
                "rasmus.koiv@example.ee", "Rasmus Kõiv", organisation="Jõgeva Sotsiaalkeskus",
                region="Jõgevamaa", years_in_social_field=14,
                topics=["management_quality", "change_at_work"],
                background="Sotsiaalosakonna juhataja; omavalitsuste ühinemise kogemus.",
            ),
            [
                s.do(184, "10:30", "applicant", "submit"),
                *_listing(s, 187, s.at(204, "10:00"))[:6],  # the interview is still ahead
            ],
        ),
    ]


# -- mentoring relations -----------------------------------------------------------------------


def _person(email: str, name: str, organisation: str, region: str, **more: Any) -> dict[str, Any]:
    return {"email": email, "name": name, "organisation": organisation, "region": region, **more}


def _asks(person: dict[str, Any], mentor: str, topic: str, question: str) -> dict[str, Any]:
    return mentee(person["email"], person["name"], mentor, topic=topic, question=question,
                  **{k: v for k, v in person.items() if k not in ("email", "name")})


def _go_on(s: Stage, day: int, place: str, goal: str, rhythm: str, fee: str) -> list[Step]:
    """Accepted; the first meeting four days later; both go on; the agreement signed by both."""
    return [
        s.do(day, "09:00", "mentor", "accept"),
        s.do(day, "09:10", "mentor", "schedule_meeting", starts_at=s.at(day + 4, "16:00"),
             place=place),
        s.do(day + 4, "18:00", "mentee", "proceed"),
        s.do(day + 5, "08:30", "mentor", "proceed"),
        s.do(day + 7, "15:00", "mentee", "draft_agreement", goal=goal, starts_on=s.date(day + 7),
             ends_on=s.date(day + 190), meeting_rhythm=rhythm, fee=fee, confidentiality=True),
        s.do(day + 8, "10:00", "mentor", "sign"),
        s.do(day + 8, "19:00", "mentee", "sign"),
    ]


def _logged(s: Stage, *days: int) -> list[Step]:
    """Meetings the mentee writes down the evening they were held."""
    return [
        s.do(day, "17:30", "mentee", "log_meeting", starts_at=s.at(day, "16:00"),
             place="videokõne", notes="Arutasime järgmisi samme.")
        for day in days
    ]


def _relations(s: Stage) -> list[Story]:
    helena = _person("helena.kukk@example.ee", "Helena Kukk", "Mulgi Valla Sotsiaalosakond",
                     "Viljandimaa", is_manager=True)
    piret = _person("piret.kadak@example.ee", "Piret Kadak", "Haapsalu Sotsiaalkeskus", "Läänemaa")
    feedback = "Kuidas ehitada üles meeskonna tagasisidesüsteem?"
    refusal = "Kuidas toetada klienti, kes keeldub abist?"
    return [
        Story(  # completed, with feedback from both; the mentor retires afterwards
            _asks(_person("kertu.laane@example.org", "Kertu Laane", "Elva Sotsiaalosakond",
                          "Tartumaa"), ENE, "career",
                  "Kas minna edasi juhtumikorraldajaks või õppida magistrantuuris?"),
            [
                s.do(24, "09:40", "mentee", "request"),
                *_go_on(s, 25, "Valga, Ene kabinet", "Selge karjääriplaan kaheks aastaks",
                        "kord kuus", "tasuta"),
                *_logged(s, 60, 90, 120),
                s.do(150, "18:00", "mentee", "close", outcome="completed"),
                s.do(152, "20:00", "mentee", "give_feedback", rating=5, comment="Väga toetav."),
                s.do(153, "09:00", "mentor", "give_feedback", rating=5),
            ],
        ),
        Story(  # not continued after the first meeting
            _asks(_person("jaanus.pold@example.ee", "Jaanus Põld", "Kohtla-Järve Lastekaitse",
                          "Ida-Virumaa"), MARGUS, "specific_situation",
                  "Kuidas lahendada konflikt eestkostjaga?"),
            [
                s.do(38, "14:00", "mentee", "request"),
                s.do(39, "09:00", "mentor", "accept"),
                s.do(39, "09:15", "mentor", "schedule_meeting", starts_at=s.at(43, "15:00"),
                     place="Jõhvi Päevakeskus"),
                s.do(44, "10:00", "mentee", "discontinue",
                     reason="Selgus, et vajan pigem juristi nõu kui mentorit."),
                s.do(46, "12:00", "mentee", "give_feedback", rating=4),
            ],
        ),
        Story(  # entered by a coordinator after a phone call; cancelled before the first meeting
            _asks(_person("merle.sepp@example.org", "Merle Sepp", "Kärdla Hooldekodu", "Hiiumaa"),
                  TIINA, "career", "Kuidas leida oma koht pärast erialavahetust?"),
            [
                s.do(58, "11:00", "coordinator", "request"),
                s.do(59, "10:00", "mentor", "accept"),
                s.do(63, "16:00", "mentee", "cancel", reason="Jään lapsehoolduspuhkusele."),
            ],
        ),
        Story(  # a manager's request, declined; she then asks the mentor suggested
            _asks(helena, PRIIT, "management_quality", feedback),
            [
                s.do(66, "13:00", "mentee", "request"),
                s.do(68, "09:00", "mentor", "decline",
                     reason="Sel kevadel pole mul aega; soovitan Kadri Kuuske."),
            ],
        ),
        Story(  # active, meetings every month
            _asks(helena, KADRI, "management_quality", feedback),
            [
                s.do(69, "10:00", "mentee", "request"),
                *_go_on(s, 70, "Tartu, Laste Turvakodu", "Toimiv tagasiside iga kuu",
                        "kaks korda kuus", "Esimene tasuta, edasi 40 €"),
                *_logged(s, 105, 135, 165, 190),
            ],
        ),
        Story(  # the mentor never answered: expired by the timer
            _asks(piret, URMAS, "specific_situation", refusal),
            [s.do(108, "10:15", "mentee", "request")],  # the expire timer does the rest
        ),
        Story(  # she asks another mentor; ended early when she changed jobs
            _asks(piret, MARGUS, "specific_situation", refusal),
            [
                s.do(119, "09:00", "mentee", "request"),
                *_go_on(s, 120, "videokõne", "Oma tegevuskava raskete juhtumite jaoks",
                        "kord kuus", "tasuta"),
                *_logged(s, 150),
                s.do(172, "12:00", "mentee", "close", outcome="ended_early",
                     reason="Vahetasin töökohta."),
                s.do(174, "19:00", "mentee", "give_feedback", rating=4),
            ],
        ),
        Story(  # reframed: the new version awaits the mentee's signature
            _asks(_person("ulle.rand@example.ee", "Ülle Rand", "Rapla Valla Hoolekandeosakond",
                          "Raplamaa", is_manager=True), ANNELI, "career",
                  "Kuidas kasvada spetsialistist juhiks?"),
            [
                s.do(96, "12:00", "mentee", "request"),
                *_go_on(s, 97, "videokõne", "Esimene aasta juhina", "kord kuus",
                        "35 € kohtumine"),
                *_logged(s, 130, 160),
                s.do(188, "17:00", "mentee", "reframe",
                     question="Kuidas juhtida meeskonda läbi valdade ühinemise?"),
                s.do(191, "09:00", "mentor", "sign"),
            ],
        ),
        Story(  # active, in English
            _asks(_person("jana.petrova@example.org", "Jana Petrova", "Lasnamäe Sotsiaalkeskus",
                          "Harjumaa", language="en"), KRISTJAN, "change_at_work",
                  "How do I support my team through the move to a new case system?"),
            [
                s.do(140, "10:00", "mentee", "request"),
                *_go_on(s, 141, "video call", "A calm transition plan for the team",
                        "every two weeks", "free of charge"),
                *_logged(s, 175),
            ],
        ),
        Story(  # agreement drafted by the mentor and signed by him only
            _asks(_person("karl.mets@example.org", "Karl Mets", "Saue Kogukonnakeskus",
                          "Harjumaa"), PRIIT, "self_care_system",
                  "Kuidas luua keskuses enesehoiu rutiinid?"),
            [
                s.do(182, "15:00", "mentee", "request"),
                *_go_on(s, 183, "Pärnu, Perekeskus", "", "", "")[:4],
                s.do(190, "11:00", "mentor", "draft_agreement", goal="Enesehoiu kava keskusele",
                     starts_on=s.date(191), ends_on=s.date(371), meeting_rhythm="kord kuus",
                     fee="tasuta", confidentiality=True),
                s.do(191, "09:00", "mentor", "sign"),
            ],
        ),
        Story(  # accepted; the first meeting is next week
            _asks(_person("eliise.toom@example.ee", "Eliise Toom", "Tartu Eakate Päevakeskus",
                          "Tartumaa"), MARGUS, "best_practice_network",
                  "Kuidas luua eakate teenuste võrgustik?"),
            [
                s.do(192, "13:00", "mentee", "request"),
                s.do(194, "09:00", "mentor", "accept"),
                s.do(195, "12:00", "mentee", "schedule_meeting", starts_at=s.at(203, "15:00"),
                     place="videokõne"),
            ],
        ),
        Story(  # waiting for the mentor's answer
            _asks(_person("tonu.kaasik@example.org", "Tõnu Kaasik", "Kuressaare Noortekeskus",
                          "Saaremaa"), KADRI, "change_at_work",
                  "Kuidas juhtida noortekeskuse kolimist?"),
            [s.do(198, "14:20", "mentee", "request")],
        ),
    ]


# fmt: on


# -- playing the stories -----------------------------------------------------------------------


def _actor(story: Story, who: str) -> str | None:
    if who == "system":
        return None
    if who in ("applicant", "mentee"):
        return str(story.data["email"])
    if who == "mentor":
        return str(story.data["mentor"])
    if who == "coordinator":
        return COORDINATOR
    return who


def _play(app: App, clock: ManualClock, stage: Stage, stories: list[Story]) -> None:
    """Run every story's steps in time order, the clock only moving forward."""
    queue = [(story.steps[0][0], order, 0) for order, story in enumerate(stories)]
    heapq.heapify(queue)
    latest = stage.now - timedelta(days=1)
    while queue:
        when, order, index = heapq.heappop(queue)
        assert clock.now <= when <= latest, f"a step at {when} is out of the timeline"
        clock.now = when
        # The service ran all along: its timers, round mail and digests happen on the way.
        scheduler.run_due_now(app)
        story = stories[order]
        _, who, trigger, values = story.steps[index]
        if trigger == "submit":
            # By the public form inside an intake round; otherwise a coordinator enters it.
            public = who == "applicant" and stage.round_open(when)
            actor = None if public else COORDINATOR
            story.ref = scenarios.submit_application(app, story.data, actor=actor)
        elif trigger == "request":
            story.ref = scenarios.submit_request(app, story.data, actor=_actor(story, who))
        else:
            scenarios.step(app, story.ref, trigger, _actor(story, who), **values)
        if index + 1 < len(story.steps):
            heapq.heappush(queue, (story.steps[index + 1][0], order, index + 1))
    clock.now = latest
    scheduler.run_due_now(app)


def _summary(app: App) -> dict[str, Any]:
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
        "coordinator": COORDINATOR,
        "committee_member": COMMITTEE[0][1],
        "password": DEMO_PASSWORD,
    }


def _open_extra_round(app: App, stage: Stage) -> None:
    """Between the scheduled rounds, an extra one (as coordinators may add), so that a demo
    on any day shows the application form open."""
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
    stage = Stage(settings, datetime.now(UTC))
    clock = ManualClock(stage.at(0, "08:00"))
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
            for name, opens, closes in stage.rounds:
                # scheduled_for: the rounds of the schedule, which the worker will not repeat.
                local_day = opens.astimezone(settings.time_zone).date()
                tx.session.add(
                    IntakeRound(
                        name=name, opens_at=opens, closes_at=closes, scheduled_for=local_day
                    )
                )
        for name, email in COORDINATORS:
            scenarios.add_staff(app, name=name, email=email, role="coordinator")
        for name, email, language in COMMITTEE:
            scenarios.add_staff(app, name=name, email=email, role="committee", language=language)
        with app.unit() as tx:  # the demo's staff log in with one shared, printed password
            for name, email in COORDINATORS:
                add_user(tx, name=name, email=email, role="coordinator", password=DEMO_PASSWORD)
            for name, email, _ in COMMITTEE:
                add_user(tx, name=name, email=email, role="committee", password=DEMO_PASSWORD)
        stories = [
            *_founding_mentors(stage),
            *_round_applicants(stage),
            *_recent_applicants(stage),
            *_relations(stage),
        ]
        _play(app, clock, stage, stories)
        _open_extra_round(app, stage)
        return _summary(app)
    finally:
        app.engine.dispose()
