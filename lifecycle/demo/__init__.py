"""The fictional demo data and the scenario helpers. The story — people, applications,
relations and each of their steps on a given day — is data in `story.toml`, read and checked
by `storyfile` and played through the real service path by `story`; `scenarios` brings cases
to a given state the same way for the tests and benchmarks. Calls `schedule`, `cases`,
`bootstrap` and `store`; nothing but the CLI imports it.
"""
