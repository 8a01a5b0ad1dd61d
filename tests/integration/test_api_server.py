"""``polynimbus serve`` for real: a uvicorn server on 127.0.0.1 (a subprocess, on a free
port) over a real lab, driven with httpx: every endpoint, the token scoping, bad bodies,
changes through the API visible in the lab's namespaces, and a clean stop on Ctrl-C.
The server is always stopped and the lab taken down (``polynimbus down``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import leftovers

LAB = "apitest"
INTENT = f"""name: {LAB}
overlay: {{topology: full-mesh, transport: wireguard}}
sites:
  - name: os
    provider: openstack
    location: {{lat: 43.6, lon: 7.0}}
    underlay: {{rate: 200mbit}}
    hosts: [app-1]
  - name: aws
    provider: aws
    location: {{lat: 50.1, lon: 8.7}}
    underlay: {{rate: 200mbit}}
    hosts: [w-1]
tenants:
  - name: acme
    rate: 50mbit
    networks:
      - {{name: lan, subnet: 192.168.1.0/24, sites: [os, aws], hosts: [os/web-1]}}
  - name: globex
    networks:
      - {{name: lan, subnet: 192.168.1.0/24, sites: [aws], hosts: [aws/web-1]}}
"""
POLYNIMBUS = str(Path(sys.executable).with_name("polynimbus"))


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    state_dir: Path
    file: Path
    output: list[str] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        token = (self.state_dir / "admin.token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}


def _netns_exec(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=20
    ).stdout


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("api")
    file, sdir = base / "apitest.yaml", base / "state"
    file.write_text(INTENT)
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.Popen(
        [POLYNIMBUS, "serve", str(file), "--port", "0", "--state-dir", str(sdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if m:
                url.append(m.group(1))
            if "Uvicorn running" in line or "Application startup complete" in line:
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    srv = None
    try:
        deadline = time.monotonic() + 180
        while not (found.is_set() and url) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        assert url and found.is_set(), "the server did not start:\n" + "".join(lines)
        srv = Server(proc, url[0], sdir, file, lines)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(
            [POLYNIMBUS, "down", str(file), "--state-dir", str(sdir)],
            capture_output=True,
            timeout=300,
        )
        assert leftovers(LAB, sdir) == []


def test_serve_prints_the_token_path_never_the_token(server: Server) -> None:
    token = server.admin["Authorization"].split()[1]
    text = "".join(server.output)
    assert f"admin token: {server.state_dir / 'admin.token'}" in text
    assert token not in text
    for name in ("admin.token", "api.sqlite"):
        assert oct(os.stat(server.state_dir / name).st_mode & 0o777) == "0o600"


def test_auth_and_scoping(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.get("/v1/admin/tenants")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        bad = c.get("/v1/admin/tenants", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        tenants = {t["name"]: t for t in c.get("/v1/admin/tenants", headers=server.admin).json()}
        acme = {"Authorization": f"Bearer {tenants['acme']['token']}"}
        assert c.get("/v1/admin/sites", headers=acme).status_code == 403
        assert c.get("/v1/tenants/acme/networks", headers=acme).status_code == 200
        other = c.get("/v1/tenants/globex/networks/lan", headers=acme)
        nobody = c.get("/v1/tenants/nobody/networks/lan", headers=acme)
        assert other.status_code == nobody.status_code == 404
        assert c.get("/docs").status_code == 200
        assert c.get("/openapi.json").json()["info"]["title"] == "polynimbus"


def test_bad_bodies_are_clear_422s(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers=server.admin) as c:
        r = c.post("/v1/tenants/acme/networks", json={"name": "x", "subnet": []})
        assert r.status_code == 422
        assert {p["path"] for p in r.json()["detail"]} == {"body.subnet", "body.sites"}
        r = c.post(
            "/v1/tenants/acme/networks",
            json={"name": "db", "subnet": "192.168.1.128/25", "sites": ["os"]},
        )
        assert r.status_code == 422  # overlaps acme's lan
        assert r.json()["detail"][0]["path"].startswith("tenants[0].networks[1]")
        r = c.patch("/v1/admin/tenants/acme", json={"rate": "9gbit"})
        assert r.status_code == 422 and r.json()["detail"][0]["path"].startswith("tenants[0]")


def test_admin_reads(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers=server.admin) as c:
        sites = c.get("/v1/admin/sites").json()
        assert [s["name"] for s in sites] == ["os", "aws"]
        assert c.get("/v1/admin/sites/aws").json()["block"] == "10.1.0.0/24"
        peering = c.get("/v1/admin/peering").json()
        assert peering["topology"] == "full-mesh" and len(peering["tunnels"]) == 1
        assert c.get("/v1/admin/tenants/globex").json()["networks"][0]["subnet"] == (
            "192.168.1.0/24"
        )
        assert c.get("/v1/admin/versions/1").json()["yaml"] == INTENT
        versions = c.get("/v1/admin/versions").json()
        assert versions[0]["version"] == 1 and versions[0]["who"] == "serve: the intent file"
        assert all("yaml" not in v or v["yaml"] is None for v in versions)
        intent = c.get("/v1/admin/intent")
        assert intent.status_code == 200
        assert intent.headers["content-type"].startswith("application/yaml")
        assert f"name: {LAB}" in intent.text and "globex" in intent.text


def test_changes_through_the_api_are_in_the_lab(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        tokens = {
            t["name"]: t["token"] for t in c.get("/v1/admin/tenants", headers=server.admin).json()
        }
        acme = {"Authorization": f"Bearer {tokens['acme']}"}

        # a provider host, through the admin API
        r = c.post("/v1/admin/sites/os/hosts", headers=server.admin, json={"name": "app-2"})
        assert r.status_code == 201, r.text
        assert f"pn.{LAB}.os.app-2" in _namespaces()
        assert "10.3.0.2/24" in _netns_exec(f"pn.{LAB}.os.app-2", "ip", "-4", "addr")
        r = c.delete("/v1/admin/sites/os/hosts/app-2", headers=server.admin)
        assert r.status_code == 200, r.text
        assert f"pn.{LAB}.os.app-2" not in _namespaces()

        # the tenant reads itself (no token shown)
        me = c.get("/v1/tenants/acme", headers=acme)
        assert me.status_code == 200
        assert me.json()["name"] == "acme" and me.json()["rate"] == "50mbit"
        assert "token" not in me.json()

        # a tenant host on the stretched network, through the tenant API
        r = c.post(
            "/v1/tenants/acme/networks/lan/hosts",
            headers=acme,
            json={"name": "aws/web-2", "address": "192.168.1.42"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["changes"] and r.json()["version"] >= 2
        # a tenant's answer lists the changes on its own nodes only
        assert all(".acme." in ch.split(": ")[0] for ch in r.json()["changes"])
        ns = f"pn.{LAB}.aws.acme.web-2"
        assert ns in _namespaces()
        assert "192.168.1.42/24" in _netns_exec(ns, "ip", "-4", "addr")
        # layer 2 across sites: web-2 (aws) reaches web-1 (os) in the same subnet
        ping = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "2", "-W", "2", "192.168.1.1"],
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr

        # a new network, extended to a second site, then deleted
        r = c.post(
            "/v1/tenants/acme/networks",
            headers=acme,
            json={"name": "db", "subnet": "10.60.0.0/24", "sites": ["os"], "hosts": ["os/pg"]},
        )
        assert r.status_code == 201, r.text
        assert f"pn.{LAB}.os.acme.pg" in _namespaces()
        r = c.post("/v1/tenants/acme/networks/db/sites", headers=acme, json={"site": "aws"})
        assert r.status_code == 200 and r.json()["network"]["layer2"] is True
        r = c.delete("/v1/tenants/acme/networks/db/hosts/os/pg", headers=acme)
        assert r.status_code == 200
        assert f"pn.{LAB}.os.acme.pg" not in _namespaces()
        r = c.delete("/v1/tenants/acme/networks/db/sites/aws", headers=acme)
        assert r.status_code == 200, r.text
        assert r.json()["network"]["sites"] == ["os"] and r.json()["network"]["layer2"] is False
        assert c.delete("/v1/tenants/acme/networks/db", headers=acme).status_code == 200

        # move: keeps address and MAC
        before = c.get("/v1/tenants/acme/networks/lan", headers=acme).json()
        web1 = next(h for h in before["hosts"] if h["name"] == "web-1")
        r = c.post(
            "/v1/tenants/acme/networks/lan/hosts/os/web-1/move",
            headers=acme,
            json={"to_site": "aws"},
        )
        assert r.status_code == 200, r.text
        moved = r.json()["moved"]
        assert (moved["address"], moved["mac"]) == (web1["address"], web1["mac"])
        assert moved["live"] is True  # polynimbus.move.move_host
        print("move answer:", moved)
        ns = f"pn.{LAB}.aws.acme.web-1"
        assert ns in _namespaces() and f"pn.{LAB}.os.acme.web-1" not in _namespaces()
        link = _netns_exec(ns, "ip", "addr")
        assert f"{web1['address']}/24" in link and web1["mac"] in link

        # the rate, the tenant and the peering
        assert (
            c.patch(
                "/v1/admin/tenants/acme", headers=server.admin, json={"rate": "60mbit"}
            ).status_code
            == 200
        )
        r = c.post(
            "/v1/admin/tenants",
            headers=server.admin,
            json={
                "name": "initech",
                "networks": [
                    {"name": "n", "subnet": "10.70.0.0/24", "sites": ["os"], "hosts": ["os/h"]}
                ],
            },
        )
        assert r.status_code == 201 and r.json()["tenant"]["token"]
        assert f"pn.{LAB}.os.initech.h" in _namespaces()
        assert c.delete("/v1/admin/tenants/initech", headers=server.admin).status_code == 200
        assert f"pn.{LAB}.os.initech.h" not in _namespaces()
        r = c.put("/v1/admin/peering", headers=server.admin, json={"topology": "hub", "hub": "os"})
        assert r.status_code == 200

    # export gives the API's intent back
    out = subprocess.run(
        [POLYNIMBUS, "export", "--lab", LAB], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "aws/web-2" in out.stdout and "hub: os" in out.stdout


def _pn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POLYNIMBUS, *args], capture_output=True, text=True, timeout=300)


def test_snapshot_restore_after_an_api_change_gives_back_the_lab(server: Server) -> None:
    """Issue 7, done means 7: a snapshot, a change through the API, a restore: the lab is
    the earlier one again (snapshot diff and verify agree), and the API sees it."""
    saved = _pn("snapshot", "save", "before-api", "--lab", LAB)
    assert saved.returncode == 0, saved.stderr
    with httpx.Client(base_url=server.url, timeout=120) as c:
        tokens = {
            t["name"]: t["token"] for t in c.get("/v1/admin/tenants", headers=server.admin).json()
        }
        acme = {"Authorization": f"Bearer {tokens['acme']}"}
        r = c.post("/v1/tenants/acme/networks/lan/hosts", headers=acme, json={"name": "os/web-9"})
        assert r.status_code == 201, r.text
        ns = f"pn.{LAB}.os.acme.web-9"
        assert ns in _namespaces()
        differs = _pn("snapshot", "diff", "before-api", "--lab", LAB)
        assert differs.returncode == 1, differs.stdout + differs.stderr
        assert "web-9" in differs.stdout
        restored = _pn("snapshot", "restore", "before-api", "--lab", LAB)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert ns not in _namespaces()
        same = _pn("snapshot", "diff", "before-api", "--lab", LAB)
        assert same.returncode == 0, same.stdout + same.stderr
        verified = _pn("verify", "--lab", LAB)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr
        # the API reads the restored intent: web-9 is gone from the network
        hosts = c.get("/v1/tenants/acme/networks/lan", headers=acme).json()["hosts"]
        assert "web-9" not in {h["name"] for h in hosts}


def test_ctrl_c_stops_cleanly(server: Server) -> None:
    """Last: stops the module's server (the fixture then takes the lab down)."""
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=60) == 0  # as docs/api.md says
    time.sleep(0.2)
    text = "".join(server.output)
    assert "Traceback" not in text
    assert "stopped serving" in text
