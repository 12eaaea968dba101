"""The mentor qualification rules of the programme, evaluated one by one with an explanation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from lifecycle.store.models import CREDENTIAL_KINDS, MentorProfile

MIN_YEARS_IN_SOCIAL_FIELD = 5
HIGHER_DEGREES = ("bachelor", "master", "doctorate")


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    explanation: str
    # A required rule blocks eligibility; the others only limit whom the mentor may take.
    required: bool = True


def degree_rule(profile: MentorProfile) -> RuleResult:
    passed = profile.degree_level in HIGHER_DEGREES and profile.degree_in_social_work
    if passed:
        text = f"{profile.degree_level}'s degree in social work ({profile.degree_field})"
    elif profile.degree_level in HIGHER_DEGREES:
        text = f"the {profile.degree_level}'s degree ({profile.degree_field}) is not in social work"
    else:
        text = "no bachelor's degree in social work declared"
    return RuleResult("degree", passed, text)


def experience_rule(profile: MentorProfile) -> RuleResult:
    years = profile.years_in_social_field
    passed = years >= MIN_YEARS_IN_SOCIAL_FIELD
    verdict = "at least" if passed else "fewer than"
    return RuleResult(
        "experience",
        passed,
        f"{years} years in the social field ({verdict} the {MIN_YEARS_IN_SOCIAL_FIELD} required)",
    )


def credential_rule(profile: MentorProfile, *, today: date) -> RuleResult:
    valid = [
        credential
        for credential in profile.credentials
        if credential.kind in CREDENTIAL_KINDS
        and (credential.valid_until is None or credential.valid_until >= today)
    ]
    if valid:
        first = valid[0]
        return RuleResult(
            "credential", True, f"{first.kind} certificate from {first.issuer} ({first.year})"
        )
    if profile.credentials:
        return RuleResult("credential", False, "the declared certificates have expired")
    return RuleResult(
        "credential", False, "no mentor, coach or work-counsellor (supervisor) certificate"
    )


def can_mentor_managers(profile: MentorProfile) -> bool:
    return profile.degree_level in ("master", "doctorate") and profile.degree_in_social_work


def manager_rule(profile: MentorProfile) -> RuleResult:
    if can_mentor_managers(profile):
        return RuleResult(
            "master_for_managers", True, "may mentor managers (master's degree)", required=False
        )
    return RuleResult(
        "master_for_managers",
        False,
        "may not mentor managers: that needs a master's degree in social work",
        required=False,
    )


def evaluate(profile: MentorProfile, *, today: date) -> list[RuleResult]:
    """Every qualification rule for this profile, in the order the programme states them."""
    return [
        degree_rule(profile),
        experience_rule(profile),
        credential_rule(profile, today=today),
        manager_rule(profile),
    ]
