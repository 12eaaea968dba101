"""The transition path: the workflow specs read from `workflows/*.toml` and their loader, the
schema each step's data is held to (`stepdata`), the engine that fires a step in the caller's
transaction, the named guards and effects, the mentor qualification rules, and the rows a step
writes besides the case — timers, outbox rows and link tokens. Imports only `store` and the
foundation (`config`, `errors`).
"""
