"""The tables: people and profiles (`people`), the two kinds of case (`cases`), what every
transition and the staff's work leave behind (`records`), on the declarative base and its
column types (`base`), with the names they share (`vocabulary`). Importing this package imports
every model module, so that the relationships between classes of different modules resolve;
the rest of the service imports the models from here, not from the modules.
"""

from lifecycle.store.models.base import Base, UTCDateTime, table
from lifecycle.store.models.cases import (
    Agreement,
    Application,
    Case,
    CommitteeVote,
    Evidence,
    Feedback,
    IntakeRound,
    Meeting,
    Relation,
    Signature,
)
from lifecycle.store.models.people import ApiToken, Credential, MentorProfile, Person, Subscriber
from lifecycle.store.models.records import (
    ActionToken,
    Announcement,
    AuditEvent,
    LoginFailure,
    OutboxMessage,
    PendingSubmission,
    PrivacyEvent,
    PublicMail,
    StaffSession,
    Timer,
)
from lifecycle.store.models.vocabulary import (
    APPLICATION,
    CASE_PREFIX,
    CREDENTIAL_KINDS,
    DEGREE_LEVELS,
    FORMATS,
    LANGUAGES,
    MENTORING,
    REGION_LABELS,
    REGIONS,
    TOPIC_LABELS,
    TOPICS,
)

__all__ = [
    "APPLICATION",
    "CASE_PREFIX",
    "CREDENTIAL_KINDS",
    "DEGREE_LEVELS",
    "FORMATS",
    "LANGUAGES",
    "MENTORING",
    "REGIONS",
    "REGION_LABELS",
    "TOPICS",
    "TOPIC_LABELS",
    "ActionToken",
    "Agreement",
    "Announcement",
    "ApiToken",
    "Application",
    "AuditEvent",
    "Base",
    "Case",
    "CommitteeVote",
    "Credential",
    "Evidence",
    "Feedback",
    "IntakeRound",
    "LoginFailure",
    "Meeting",
    "MentorProfile",
    "OutboxMessage",
    "PendingSubmission",
    "Person",
    "PrivacyEvent",
    "PublicMail",
    "Relation",
    "Signature",
    "StaffSession",
    "Subscriber",
    "Timer",
    "UTCDateTime",
    "table",
]
