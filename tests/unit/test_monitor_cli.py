"""monitor and report refuse bad options with a one-line error (exit 2), never a
traceback, and report writes only where it may (review findings of issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from polynimbus.cli import app
from polynimbus.cli.report import OUTPUTS, REPORT_MARKER, prepare_out
from polynimbus.errors import PolynimbusError


@pytest.mark.parametrize(
    "args",
    [
        ["--interval", "nan"],
        ["--interval", "inf"],
        ["--interval", "0.0000001"],
        ["--interval", "0"],
        ["--duration", "nan"],
        ["--duration", "inf"],
        ["--counters", "nan"],
    ],
)
def test_monitor_refuses_numbers_that_are_not_usable_seconds(args: list[str]) -> None:
    res = CliRunner().invoke(app, ["monitor", "examples/failover.yaml", *args])
    assert res.exit_code == 2, res.output  # a usage error, not a traceback (exit 1)


def test_monitor_takes_the_shortest_interval_it_allows(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["monitor", "examples/failover.yaml", "--interval", "0.05", "--duration", "1"]
        + ["--state-dir", str(tmp_path)],
    )
    assert res.exit_code == 1, res.output  # accepted; then: the lab is not up
    assert "not up" in res.output


def test_report_out_must_be_a_directory_it_may_write(tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    with pytest.raises(PolynimbusError, match="is a file"):
        prepare_out(a_file)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PolynimbusError, match="did not write"):
        prepare_out(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(PolynimbusError, match="cannot write the report"):
        prepare_out(Path("/proc/polynimbus-report-test"))


def test_report_removes_an_earlier_reports_files_only(tmp_path: Path) -> None:
    out = tmp_path / "r"
    prepare_out(out)
    assert (out / REPORT_MARKER).exists()
    for name in OUTPUTS:
        (out / name).write_text("old")
    (out / "kept.txt").write_text("a user's file in a report directory")
    prepare_out(out)
    assert not any((out / name).exists() for name in OUTPUTS)  # no stale figure left
    assert (out / "kept.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_out(empty)  # an empty directory is fine
    assert (empty / REPORT_MARKER).exists()
    older = tmp_path / "older"  # written before reports left a marker
    older.mkdir()
    (older / "boxplot.png").write_text("old")
    prepare_out(older)
    assert not (older / "boxplot.png").exists()
