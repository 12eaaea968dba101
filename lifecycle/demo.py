"""Fictional demo data, told through the real service path (placeholder until written)."""

from __future__ import annotations

from typing import Any

from lifecycle.config import Settings


def load(settings: Settings) -> dict[str, Any]:
    raise NotImplementedError
