"""Email rendering: Jinja2 templates in email_templates/<language>/<name>.txt.

Each template extends `_layout.txt` and fills the blocks `subject` and `body`. Every
template gets the same context keys (see `sample_context`), empty where they do not
apply, so StrictUndefined catches a misspelt name and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined


def environment(templates_dir: Path, language: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir / language),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(env: Environment, name: str, context: dict[str, Any]) -> tuple[str, str]:
    """The (subject, plain-text body) of one email."""
    template = env.get_template(f"{name}.txt")
    subject = "".join(template.blocks["subject"](template.new_context(context))).strip()
    return " ".join(subject.split()), template.render(context)


def sample_context() -> dict[str, Any]:
    """Every key a template may use, with realistic values (tests render each template)."""
    return {
        "programme": {"name": "Mentorlus", "from_address": "mentorlus@example.org"},
        "recipient": {"name": "Mari Maasikas", "role": "mentee"},
        "case": {"ref": "M-7", "state_label": "Pöördumine saadetud"},
        "comment": "Palun lisage diplomi koopia.",
        "link": "https://mentorlus.example.org/a/abc123",
        "applicant_name": "Kalle Kask",
        "mentor_name": "Tiina Tamm",
        "mentee_name": "Mari Maasikas",
        "topic": "karjäärieesmärgid ja eneseareng",
        "interview": {"at": "12.03.2027 14:00", "place": "Tallinn, Pärnu mnt 10", "updated": True},
        "meeting": {"at": "15.03.2027 10:00", "place": "videokõne", "updated": True},
        "agreement": {"version": 2, "ends_on": "30.06.2027"},
        "alternatives": [{"name": "Peeter Pärn", "link": "https://mentorlus.example.org/m/3"}],
        "only_certificate_missing": True,
    }
