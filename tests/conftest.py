"""Shared fixtures and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def intent_text(sites: str, overlay: str = "", name: str = "t") -> str:
    """A small intent YAML with the given ``sites:`` body and ``overlay:`` body."""
    ov = f"overlay:\n{overlay}" if overlay else ""
    return f"name: {name}\n{ov}sites:\n{sites}"


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
