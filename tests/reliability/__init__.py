"""The reliability suite: the service as real processes under load and faults.

What it promises and what it measured: docs/reliability.md.
"""
