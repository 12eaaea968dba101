"""The names the tables, forms and workflows share: the two workflows and the prefixes of their
case IDs, the mentoring topics, and the values a mentor's profile may hold."""

from __future__ import annotations

# Workflow names, also the prefix of the readable case IDs.
APPLICATION = "mentor_application"
MENTORING = "mentoring"
CASE_PREFIX = {APPLICATION: "A", MENTORING: "M"}

TOPIC_LABELS = {
    "career": {"et": "karjäärieesmärgid ja eneseareng", "en": "career goals and self-development"},
    "self_care_system": {
        "et": "organisatsiooni enesehoiusüsteemi kujundamine",
        "en": "the organisation's self-care system",
    },
    "management_quality": {
        "et": "juhtimiskvaliteedi edendamine",
        "en": "improving management quality",
    },
    "specific_situation": {
        "et": "konkreetse olukorra lahendamine",
        "en": "resolving a specific situation",
    },
    "best_practice_network": {
        "et": "parimate kogemuste jagamine, võrgustiku tugevdamine",
        "en": "sharing best practice, strengthening the network",
    },
    "change_at_work": {"et": "tööalaste muudatuste toetamine", "en": "supporting changes at work"},
}
TOPICS = tuple(TOPIC_LABELS)
DEGREE_LEVELS = ("none", "bachelor", "master", "doctorate")
CREDENTIAL_KINDS = ("mentor", "coach", "supervisor")
FORMATS = ("in_person", "online")
LANGUAGES = ("et", "en")
# Where a person works and where a mentor can meet: Estonia's counties, all of Estonia, or
# abroad — chosen from this list, never typed. A region is stored as its Estonian name, which a
# county keeps in English too; the other two have an English label of their own.
ALL_ESTONIA = "Kogu Eesti"
ABROAD = "Välismaa"
REGIONS = (
    "Harjumaa",
    "Hiiumaa",
    "Ida-Virumaa",
    "Jõgevamaa",
    "Järvamaa",
    "Läänemaa",
    "Lääne-Virumaa",
    "Põlvamaa",
    "Pärnumaa",
    "Raplamaa",
    "Saaremaa",
    "Tartumaa",
    "Valgamaa",
    "Viljandimaa",
    "Võrumaa",
    ALL_ESTONIA,
    ABROAD,
)
REGION_LABELS = {
    **{region: {"et": region, "en": region} for region in REGIONS},
    ALL_ESTONIA: {"et": ALL_ESTONIA, "en": "All of Estonia"},
    ABROAD: {"et": ABROAD, "en": "Abroad"},
}
