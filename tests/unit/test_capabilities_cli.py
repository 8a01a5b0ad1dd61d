"""Capability errors and CLI behaviour that needs no root."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from polynimbus import capabilities
from polynimbus.cli import app
from polynimbus.errors import CapabilityError
from tests.conftest import EXAMPLES

runner = CliRunner()


def test_missing_tool_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(capabilities.shutil, "which", lambda t: None if t == "wg" else "/x")
    with pytest.raises(CapabilityError) as exc:
        capabilities.require_tools(["ip", "wg"])
    assert "wg (Debian package wireguard-tools)" in exc.value.message
    assert "apt-get install wireguard-tools" in (exc.value.hint or "")


def test_validate_exit_codes(tmp_path):
    ok = runner.invoke(app, ["validate", str(EXAMPLES / "prestocloud.yaml")])
    assert ok.exit_code == 0 and "valid (3 sites, 5 hosts" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsites:\n  - {name: a, provider: awz}\n  - {name: a, provider: aws}\n")
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "sites[0].provider: unknown provider 'awz'" in res.output
    assert "sites[1].name: duplicate site name 'a'" in res.output


def test_plan_json_document():
    res = runner.invoke(app, ["plan", "--json", str(EXAMPLES / "federation.yaml")])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["schema"] == "polynimbus.plan/v1"
    assert doc["overlay"]["tunnel_mtu"] == 1440 and doc["overlay"]["tcp_mss"] == 1400
    hpi = next(s for s in doc["sites"] if s["name"] == "hpi")
    assert {r["via"] for r in hpi["gateway"]["routes"]} == {"aalto"}


def test_down_needs_file_or_lab():
    res = runner.invoke(app, ["down"])
    assert res.exit_code == 1 and "give the intent FILE or --lab NAME" in res.output
