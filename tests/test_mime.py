"""What the product composes, read back the way a mail program reads it (email.parser with
policy.default): any name, subject and body in Estonian or English arrive as written, every
line is 7-bit and short enough for SMTP, and no text can add a header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import hypothesis
import pytest
from hypothesis import strategies as st
from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.demo import scenarios
from lifecycle.mail import mailer
from lifecycle.store.models import OutboxMessage, Person
from tests.conftest import COORDINATOR

WORDS = [
    *("Tõnu", "Õunapuu", "Jüri", "Ärm", "Šarlota", "Žanna", "Mõisaküla", "sotsiaaltöö"),
    *("kohtumine", "mentorluslepingu", "ülevaatamine", "jõulukuu", "Pärnumaa", "Võru"),
    *("mentoring", "meeting", "agreement", "Smith", "O'Brien", "Anne-Marie", "the", "of"),
    *(",", '"', "'", "(", ")", ";", ":", "<", ">", "@", ".", "[", "]", "\\", "—", "„", "“"),
]
# Controls and line breaks never reach a header: input refuses them (surrogates cannot be text).
PRINTABLE = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])
LONG_WORD = st.text(st.sampled_from("abcdefghijklmnoprsšzžtuvwõäöüxyABCÕÄÖÜŠŽ"), min_size=60)
GAP = st.sampled_from([" ", " ", "  ", ", ", " \t", "", "\u00a0"])


@st.composite
def phrases(draw: st.DrawFn, max_words: int, *, characters: st.SearchStrategy[str]) -> str:
    """Estonian and English words, punctuation, any text and long words; spaces or not at
    either end."""
    word = st.one_of(
        st.sampled_from(WORDS), st.text(characters, min_size=1, max_size=12), LONG_WORD
    )
    pieces = draw(st.lists(st.tuples(word, GAP), max_size=max_words))
    ends = st.sampled_from(["", " ", "  "])
    return draw(ends) + "".join(word + gap for word, gap in pieces) + draw(ends)


# A person's name is at most 200 characters (input's limit); within the Basic Multilingual
# Plane it then fits one encoded word on one line (see mailer._OneLineAddress).
NAMES = phrases(
    6, characters=st.characters(max_codepoint=0xFFFF, exclude_categories=["Cc", "Cs", "Zl", "Zp"])
).map(lambda name: name[:200])
SUBJECTS = phrases(30, characters=PRINTABLE)
# A body's lines may be long, end in spaces and hold any text a person can type.
LINES = st.one_of(
    phrases(20, characters=PRINTABLE), st.text(st.characters(exclude_categories=["Cc", "Cs"]))
)
BODIES = st.builds(
    lambda lines, ending: "\n".join(lines) + ending,
    st.lists(LINES, max_size=20),
    GAP | st.just("\n"),
)


def composed(
    *,
    programme: str = "Mentorlus",
    name: str = "Mari Maasikas",
    subject: str = "Tere",
    body: str = "Tere!\n",
    unsubscribe: str | None = None,
    invitation: tuple[str, str] | None = None,
) -> bytes:
    return mailer.build(
        sender=(programme, "mentorlus@example.org"),
        recipient=(name, "mari@example.org"),
        subject=subject,
        text=body,
        html="<p>Tere!</p>\n",
        message_id="<42.7@example.org>",
        date=datetime(2026, 9, 20, 11, 0, tzinfo=UTC),
        unsubscribe=unsubscribe,
        invitation=invitation,
    )


def read(content: bytes) -> EmailMessage:
    mail = message_from_bytes(content, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    return mail


def words(text: str) -> str:
    """What a header carries of a text: its words, one space between them. Folding and
    parsing keep no leading or repeated spaces, so the composer writes none (mailer._words)."""
    return " ".join(text.split())


def text_body(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")  # SMTP's line ends, read back


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(programme=NAMES, name=NAMES, subject=SUBJECTS, body=BODIES)
def test_any_name_subject_and_body_read_back_as_written(
    programme: str, name: str, subject: str, body: str
) -> None:
    content = composed(programme=programme, name=name, subject=subject, body=body)
    mail = read(content)

    assert [a.display_name for a in mail["From"].addresses] == [words(programme)]
    assert [a.addr_spec for a in mail["From"].addresses] == ["mentorlus@example.org"]
    assert [a.display_name for a in mail["To"].addresses] == [words(name)]
    assert [a.addr_spec for a in mail["To"].addresses] == ["mari@example.org"]
    assert str(mail["Subject"]) == words(subject)
    # A text part is lines: the last one ends in a line break too.
    assert text_body(mail) == (body if body.endswith("\n") else body + "\n")
    assert not mail.defects and not any(part.defects for part in mail.walk())
    # Sent without BODY=8BITMIME: 7-bit, and no line over SMTP's limit.
    assert content.isascii()
    assert max(len(line) for line in content.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    "text",
    [
        "Mari\r\nBcc: x@evil.example",
        "Mari\nBcc: x@evil.example",
        "Mari\rBcc: x@evil.example",
        # An encoded word spelt out is decoded by the email package, line break and all.
        "=?utf-8?q?Mari=0D=0ABcc:_x@evil.example?=",
        "Mari =?utf-8?b?DQpCY2M6IHhAZXZpbC5leGFtcGxl?=",
        '"Mari, =?utf-8?q?=0ABcc:_x@evil.example?="',
    ],
)
@pytest.mark.parametrize("where", ["name", "programme", "subject"])
def test_a_name_or_subject_that_would_break_the_header_line_is_refused(
    text: str, where: str
) -> None:
    with pytest.raises(ValueError):
        composed(**{where: text})


def test_the_unsubscribe_url_is_written_as_it_is_however_long() -> None:
    url = "https://mentorlus.sotsiaaltoo.example.ee/l/" + "AbC-_9" * 20 + ".0123456789abcdef"
    content = composed(unsubscribe=url)
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in content  # not folded, not encoded
    mail = read(content)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_invitation_goes_as_the_calendar_part_with_its_method() -> None:
    ics = (
        "BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nSUMMARY:Kohtumine Ülle ja Tõnuga\r\nEND:VCALENDAR\r\n"
    )
    mail = read(composed(invitation=("CANCEL", ics)))
    assert [part.get_content_type() for part in mail.iter_parts()] == [
        "text/plain",
        "text/html",
        "text/calendar",
    ]
    invitation = mail.get_body(("calendar",))
    assert invitation is not None and invitation.get_param("method") == "CANCEL"
    assert invitation.get_content().replace("\r\n", "\n") == ics.replace("\r\n", "\n")


def test_a_reader_named_in_estonian_with_quotes_and_a_comma_gets_the_name_as_typed(
    app: App,
) -> None:
    name = 'Õie-Mall „Õiekene" Mägi-Šmidt, MSc'
    scenarios.submit_application(
        app, scenarios.applicant("oie.magi@example.org", name), actor=COORDINATOR
    )
    (mail,) = compose_for(app, "oie.magi@example.org")
    assert [a.display_name for a in mail["To"].addresses] == [name]
    assert name in text_body(mail)  # the greeting


def test_a_name_spelling_an_encoded_line_break_fails_its_message_instead_of_adding_a_header(
    app: App,
) -> None:
    # Input takes it (no control character in it); only the email package would decode it.
    name = "=?utf-8?q?Mari=0D=0ABcc:_x@evil.example?="
    scenarios.submit_application(
        app, scenarios.applicant("mari@example.org", name), actor=COORDINATOR
    )
    with pytest.raises(ValueError):  # the worker fails the message: it cannot be rendered
        compose_for(app, "mari@example.org")


def compose_for(app: App, address: str) -> list[EmailMessage]:
    with app.unit() as tx:
        person = tx.session.scalar(select(Person).where(Person.email == address))
        assert person is not None
        rows = tx.session.scalars(
            select(OutboxMessage).where(OutboxMessage.to_person_id == person.id)
        ).all()
        return [read(mailer.compose(tx.session, app.settings, row)) for row in rows]
