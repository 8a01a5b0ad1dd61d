"""Each invalid intent in tests/errors yields exactly the text in its .txt file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.errors.regenerate import HERE, render

CASES = sorted(HERE.glob("*.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_error_text(case: Path) -> None:
    assert render(case) == case.with_suffix(".txt").read_text()


def test_every_case_has_expected_text() -> None:
    assert CASES and all(c.with_suffix(".txt").exists() for c in CASES)
