"""Mentorlus: the mentoring programme of a social-work association.

Imports run one way, from the entry points down (pyproject.toml's import-linter contracts hold
it, run by `make lint`): `cli`, `web` and `demo` call the capabilities `schedule`, `mail`,
`privacy`, `reports`; those and the entry points call `bootstrap` (the composition root) and the
use cases in `cases` and `directory`; those fire `workflows`, which write through `store`.
`config`, `errors` and `logs` sit under everything and import nothing of the rest.
"""
