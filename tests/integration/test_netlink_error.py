"""A netlink error while reading the lab ends in one line with a hint, not a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pyroute2 import NetlinkError
from typer.testing import CliRunner

from polynimbus import state as pn_state
from polynimbus.cli import app
from polynimbus.targets.lab import netlink
from tests.integration.conftest import three_sites


def test_netlink_error_during_observe_is_one_line(lab, tmp_path: Path, monkeypatch) -> None:
    path = lab.write(three_sites("it-nlerr"))

    def broken(*args, **kwargs):
        raise NetlinkError(16, "Device or resource busy")

    monkeypatch.setattr(netlink, "observe_node", broken)
    runner = CliRunner()
    state = str(lab.state("it-nlerr"))
    # the first observe finds no namespace: make one (for real: every reader enters it, and
    # the lab fixture's down removes it) so that the netlink read is reached
    subprocess.run(["ip", "netns", "add", "pn.it-nlerr.internet"], check=True)
    pn_state.prepare(Path(state), "it-nlerr")  # as a first up would have left it
    pn_state.record_state_dir("it-nlerr", Path(state))
    res = runner.invoke(app, ["up", str(path), "--state-dir", state])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[0].startswith("error: cannot read the lab 'it-nlerr'")
    assert "netlink error 16" in lines[0]
    assert lines[1].strip().startswith("hint:")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
