"""The plan and rendered files of each example match the reviewed golden files."""

from __future__ import annotations

import os
import subprocess
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


def test_a_vxlan_case_is_covered() -> None:
    assert any("transport: vxlan" in e.read_text() for e in EXAMPLES)


NFT_FILES = sorted(HERE.glob("*/*.nft"))


@pytest.mark.parametrize("path", NFT_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in NFT_FILES])
def test_rendered_rulesets_are_accepted_by_nft(path: Path) -> None:
    """Each golden ruleset loads into a real kernel (a throw-away namespace), not just
    parses: nft -c checks it against the kernel's netlink API."""
    if os.geteuid() != 0:
        pytest.fail("this check needs root (nft -c talks to the kernel); make test runs as root")
    res = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr


def test_nft_check_rejects_a_broken_ruleset(tmp_path: Path) -> None:
    """Positive control for the check above: a ruleset the kernel cannot take fails it."""
    if os.geteuid() != 0:
        pytest.fail("this check needs root (nft -c talks to the kernel); make test runs as root")
    bad = tmp_path / "bad.nft"
    text = NFT_FILES[0].read_text().replace("masquerade", "masquerade to :70000")
    bad.write_text(text)
    res = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(bad)], capture_output=True)
    assert res.returncode != 0
