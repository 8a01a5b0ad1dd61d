"""The plan and rendered files of each example match the reviewed golden files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden.regenerate import HERE, examples, render_all

EXAMPLES = examples()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_golden(example: Path) -> None:
    want_dir = HERE / example.stem
    got = render_all(example)
    have = {p.name for p in want_dir.iterdir()} if want_dir.exists() else set()
    assert set(got) == have, "golden files out of date: run make golden and review the diff"
    for name, text in got.items():
        assert text == (want_dir / name).read_text(), f"{example.stem}/{name} differs"


def test_three_examples_are_covered() -> None:
    assert {e.stem for e in EXAMPLES} >= {"prestocloud", "federation", "aws-regions"}
