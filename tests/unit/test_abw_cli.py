"""``polynimbus abw``'s command line: errors that need no lab, and its help."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from polynimbus.cli import app

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prestocloud.yaml"


def test_unknown_site_lists_the_known_ones() -> None:
    res = runner.invoke(app, ["abw", str(EXAMPLE), "i3s", "gcp-x"])
    assert res.exit_code == 1, res.output
    assert "error: no site named 'gcp-x' in the lab 'prestocloud'" in res.output
    assert "hint: sites: i3s, aws-fra, azure-weu" in res.output
    assert "Traceback" not in res.output


def test_the_same_site_twice_is_refused() -> None:
    res = runner.invoke(app, ["abw", str(EXAMPLE), "i3s", "i3s"])
    assert res.exit_code == 1, res.output
    assert "error: SITE1 and SITE2 are both 'i3s'" in res.output


def test_a_bad_channel_is_a_usage_error() -> None:
    res = runner.invoke(app, ["abw", str(EXAMPLE), "i3s", "aws-fra", "--channel", "sideways"])
    assert res.exit_code == 2 and "sideways" in res.output


def test_help_teaches_the_method_and_the_argument_order() -> None:
    res = runner.invoke(app, ["abw", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "SLoPS" in res.output and "FILE comes first" in res.output
    assert "polynimbus abw examples/federation.yaml aalto nec-hd" in res.output
