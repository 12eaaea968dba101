"""The fictional demo data (`story`) and the scenario helpers that bring cases to a given state
through the real service path (`scenarios`, also used by the tests and benchmarks). Calls
`schedule`, `cases`, `bootstrap` and `store`; nothing but the CLI imports it.
"""
