"""The REST API of ``polynimbus serve`` against the fake target (no root, no namespaces):
auth and token scoping, every endpoint, validation errors with paths, versions, files
0600, the lab's saved intent as the source of truth, ``export`` round trip, and a
schemathesis fuzz of the app's own OpenAPI document (no 5xx)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from polynimbus import state
from polynimbus.api import Controller, create_app, open_controller
from polynimbus.api.applier import FakeApplier
from polynimbus.cli import app as cli_app
from polynimbus.intent import load_intent_text
from polynimbus.numbering import tenant_id, vni_of
from polynimbus.orchestrate import intent_yaml

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tenants.yaml"


class Api:
    """A TestClient over a controller on the fake target, with the tokens at hand."""

    def __init__(self, state_dir: Path, text: str | None = None) -> None:
        self.text = text if text is not None else EXAMPLE.read_text()
        self.state_dir = state_dir
        intent = load_intent_text(self.text, "example")
        applier = FakeApplier(state_dir)
        applier.apply(intent)
        self.controller: Controller = open_controller(intent, self.text, applier)
        self.client = TestClient(create_app(self.controller), raise_server_exceptions=False)
        self.admin_token = (state_dir / "admin.token").read_text().strip()
        self.admin = {"Authorization": f"Bearer {self.admin_token}"}

    def tenant(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.controller.store.tokens()[name]}"}

    def intent(self) -> Any:
        return load_intent_text(state.saved_intent(self.state_dir) or "", "saved")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path / "state")
    yield a
    a.controller.store.close()


def paths(answer: Any) -> list[str]:
    return [p["path"] for p in answer.json()["detail"]]


# ------------------------------------------------------------------------ auth
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTpi"}, {"Authorization": ""}],
    ids=["none", "unknown", "basic", "empty"],
)
@pytest.mark.parametrize(
    "path", ["/v1/admin/tenants", "/v1/tenants/acme/networks", "/v1/admin/sites"]
)
def test_no_or_a_wrong_token_is_401_with_bearer_challenge(
    api: Api, headers: dict[str, str], path: str
) -> None:
    r = api.client.get(path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in r.json()["detail"]


def test_a_tenant_token_on_admin_endpoints_is_403(api: Api) -> None:
    for method, path in [
        ("GET", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants/acme"),
        ("GET", "/v1/admin/sites"),
        ("GET", "/v1/admin/peering"),
        ("DELETE", "/v1/admin/tenants/acme"),
    ]:
        r = api.client.request(method, path, headers=api.tenant("acme"))
        assert r.status_code == 403, (method, path)
    assert len(api.intent().tenants) == 2


def test_a_tenant_never_sees_nor_changes_another_tenants_objects(api: Api) -> None:
    acme = api.tenant("acme")
    missing = api.client.get("/v1/tenants/initech/networks", headers=acme)
    assert missing.status_code == 404
    for method, path, body in [
        ("GET", "/v1/tenants/globex", None),
        ("GET", "/v1/tenants/globex/networks", None),
        ("GET", "/v1/tenants/globex/networks/front", None),
        (
            "POST",
            "/v1/tenants/globex/networks",
            {"name": "x", "subnet": "10.9.0.0/24", "sites": ["i3s"]},
        ),
        ("DELETE", "/v1/tenants/globex/networks/front", None),
        ("POST", "/v1/tenants/globex/networks/front/sites", {"site": "i3s"}),
        ("POST", "/v1/tenants/globex/networks/front/hosts", {"name": "aws-fra/x"}),
        ("DELETE", "/v1/tenants/globex/networks/front/hosts/aws-fra/web-1", None),
        ("POST", "/v1/tenants/globex/networks/front/hosts/aws-fra/web-1/move", {"to_site": "i3s"}),
    ]:
        r = api.client.request(method, path, headers=acme, json=body)
        assert r.status_code == 404, (method, path, r.text)
        # the same answer as for a tenant that does not exist: existence does not leak
        assert r.json()["detail"] == "no tenant 'globex'"
    assert missing.json()["detail"] == "no tenant 'initech'"
    assert api.intent() == load_intent_text(api.text, "example")  # nothing changed


def test_a_tenants_own_objects_and_the_admin_everywhere(api: Api) -> None:
    for headers in (api.tenant("globex"), api.admin):
        r = api.client.get("/v1/tenants/globex/networks", headers=headers)
        assert r.status_code == 200
        assert [n["name"] for n in r.json()] == ["front", "back"]
    own = api.client.get("/v1/tenants/globex", headers=api.tenant("globex")).json()
    assert own["name"] == "globex" and own["rate"] == "50mbit" and "token" not in own


# ------------------------------------------------------------------------ admin
def test_admin_lists_tenants_with_rates_and_tokens(api: Api) -> None:
    r = api.client.get("/v1/admin/tenants", headers=api.admin)
    assert r.status_code == 200
    got = {t["name"]: t for t in r.json()}
    assert set(got) == {"acme", "globex"}
    assert got["acme"]["rate"] == "100mbit" and got["acme"]["rate_bps"] == 100_000_000
    assert got["acme"]["token"] != got["globex"]["token"]
    assert len(got["acme"]["token"]) >= 40
    one = api.client.get("/v1/admin/tenants/globex", headers=api.admin).json()
    assert one["token"] == got["globex"]["token"]
    assert api.client.get("/v1/admin/tenants/initech", headers=api.admin).status_code == 404


def test_create_a_tenant_then_its_token_works_and_delete_revokes_it(api: Api) -> None:
    body = {
        "name": "initech",
        "rate": "20mbit",
        "networks": [{"name": "lan", "subnet": "192.168.1.0/24", "sites": ["azure-weu"]}],
    }
    r = api.client.post("/v1/admin/tenants", headers=api.admin, json=body)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["version"] == 2
    assert answer["counts"]["create"] > 0
    assert any("pn.tenants.azure-weu.initech" in c for c in answer["changes"])
    token = answer["tenant"]["token"]
    assert [t.name for t in api.intent().tenants] == ["acme", "globex", "initech"]
    mine = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/tenants/initech/networks", headers=mine).status_code == 200
    assert api.client.get("/v1/tenants/acme/networks", headers=mine).status_code == 404

    again = api.client.post("/v1/admin/tenants", headers=api.admin, json=body)
    assert again.status_code == 422
    assert "tenants[3].name" in paths(again)

    gone = api.client.delete("/v1/admin/tenants/initech", headers=api.admin)
    assert gone.status_code == 200 and gone.json()["counts"]["delete"] > 0
    assert [t.name for t in api.intent().tenants] == ["acme", "globex"]
    assert api.client.get("/v1/tenants/initech/networks", headers=mine).status_code == 401
    assert api.client.delete("/v1/admin/tenants/initech", headers=api.admin).status_code == 404


def test_a_tenant_whose_hashed_id_is_taken_gets_a_free_id(api: Api) -> None:
    """Tenant ids are 15-bit hashes of names: t1 and t59 collide. The second one created
    gets an explicit id:, the smallest free one, instead of a 422."""
    assert tenant_id("t1") == tenant_id("t59")
    first = api.client.post("/v1/admin/tenants", headers=api.admin, json={"name": "t1"})
    assert first.status_code == 201, first.text
    r = api.client.post("/v1/admin/tenants", headers=api.admin, json={"name": "t59"})
    assert r.status_code == 201, r.text
    taken = {tenant_id(n) for n in ("acme", "globex", "t1")}
    free = min(set(range(1, 0x8000)) - taken)
    assert r.json()["tenant"]["id"] == free
    ids = {t.name: t.id for t in api.intent().tenants}
    assert ids == {"acme": None, "globex": None, "t1": None, "t59": free}
    assert api.client.get("/v1/tenants/t59", headers=api.tenant("t59")).json()["id"] == free


def test_change_a_tenants_rate(api: Api) -> None:
    r = api.client.patch("/v1/admin/tenants/globex", headers=api.admin, json={"rate": "60mbit"})
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["update"] > 0
    assert api.intent().tenants[1].rate == "60mbit"
    bad = api.client.patch("/v1/admin/tenants/globex", headers=api.admin, json={"rate": "fast"})
    assert bad.status_code == 422 and paths(bad) == ["tenants[1].rate"]
    too_much = api.client.patch(
        "/v1/admin/tenants/globex", headers=api.admin, json={"rate": "1gbit"}
    )
    assert too_much.status_code == 422
    assert all(p.startswith("tenants[1]") for p in paths(too_much))
    none = api.client.patch("/v1/admin/tenants/globex", headers=api.admin, json={"rate": None})
    assert none.status_code == 200 and api.intent().tenants[1].rate is None


def test_sites_list_read_and_hosts(api: Api) -> None:
    r = api.client.get("/v1/admin/sites", headers=api.admin)
    assert [s["name"] for s in r.json()] == ["i3s", "aws-fra", "azure-weu"]
    one = api.client.get("/v1/admin/sites/aws-fra", headers=api.admin).json()
    assert one["block"] == "10.1.0.0/24" and one["gateway"]["address"] == "10.1.0.254"
    assert api.client.get("/v1/admin/sites/mars", headers=api.admin).status_code == 404
    add = api.client.post(
        "/v1/admin/sites/azure-weu/hosts", headers=api.admin, json={"name": "db-9"}
    )
    assert add.status_code == 201
    assert any("pn.tenants.azure-weu.db-9" in c for c in add.json()["changes"])
    dup = api.client.post(
        "/v1/admin/sites/azure-weu/hosts", headers=api.admin, json={"name": "db-9"}
    )
    assert dup.status_code == 422 and paths(dup) == ["sites[2].hosts[1]"]
    rm = api.client.delete("/v1/admin/sites/azure-weu/hosts/db-9", headers=api.admin)
    assert rm.status_code == 200 and rm.json()["counts"]["delete"] > 0
    assert (
        api.client.delete("/v1/admin/sites/azure-weu/hosts/db-9", headers=api.admin).status_code
        == 404
    )


def test_peering_read_and_change(api: Api) -> None:
    r = api.client.get("/v1/admin/peering", headers=api.admin).json()
    assert r["topology"] == "full-mesh" and len(r["tunnels"]) == 3
    no_hub = api.client.put("/v1/admin/peering", headers=api.admin, json={"topology": "hub"})
    assert no_hub.status_code == 422 and paths(no_hub) == ["overlay"]
    bad = api.client.put("/v1/admin/peering", headers=api.admin, json={"topology": "ring"})
    assert bad.status_code == 422 and paths(bad) == ["overlay.topology"]
    hub = api.client.put(
        "/v1/admin/peering", headers=api.admin, json={"topology": "hub", "hub": "aws-fra"}
    )
    assert hub.status_code == 200 and sum(hub.json()["counts"].values()) > 0
    now = api.client.get("/v1/admin/peering", headers=api.admin).json()
    assert now["hub"] == "aws-fra" and len(now["tunnels"]) == 2


# ------------------------------------------------------------------------ tenant API
def test_network_lifecycle(api: Api) -> None:
    acme = api.tenant("acme")
    body = {"name": "db", "subnet": "10.50.0.0/24", "sites": ["i3s"], "hosts": ["i3s/pg-1"]}
    r = api.client.post("/v1/tenants/acme/networks", headers=acme, json=body)
    assert r.status_code == 201, r.text
    net = r.json()["network"]
    assert net["hosts"][0]["address"] == "10.50.0.1" and net["layer2"] is False
    assert any("pn.tenants.i3s.acme.pg-1" in c for c in r.json()["changes"])
    got = api.client.get("/v1/tenants/acme/networks/db", headers=acme).json()
    assert got == net
    names = [n["name"] for n in api.client.get("/v1/tenants/acme/networks", headers=acme).json()]
    assert names == ["front", "shared", "db"]

    ext = api.client.post(
        "/v1/tenants/acme/networks/db/sites", headers=acme, json={"site": "aws-fra"}
    )
    assert ext.status_code == 200 and ext.json()["network"]["layer2"] is True
    assert (
        api.client.post(
            "/v1/tenants/acme/networks/db/sites", headers=acme, json={"site": "aws-fra"}
        ).status_code
        == 409
    )
    nowhere = api.client.post(
        "/v1/tenants/acme/networks/db/sites", headers=acme, json={"site": "mars"}
    )
    assert nowhere.status_code == 422 and paths(nowhere) == ["tenants[0].networks[2].sites[2]"]

    att = api.client.post(
        "/v1/tenants/acme/networks/db/hosts",
        headers=acme,
        json={"name": "aws-fra/pg-2", "address": "10.50.0.20"},
    )
    assert att.status_code == 201
    assert [h["address"] for h in att.json()["network"]["hosts"]] == ["10.50.0.1", "10.50.0.20"]
    outside = api.client.post(
        "/v1/tenants/acme/networks/db/hosts",
        headers=acme,
        json={"name": "aws-fra/pg-3", "address": "10.51.0.1"},
    )
    assert outside.status_code == 422
    assert paths(outside) == ["tenants[0].networks[2].hosts[2].address"]
    assert outside.json()["detail"][0]["hint"]
    off_site = api.client.post(
        "/v1/tenants/acme/networks/db/hosts", headers=acme, json={"name": "azure-weu/pg-3"}
    )
    assert off_site.status_code == 422

    det = api.client.delete("/v1/tenants/acme/networks/db/hosts/aws-fra/pg-2", headers=acme)
    assert det.status_code == 200 and det.json()["counts"]["delete"] > 0
    assert (
        api.client.delete(
            "/v1/tenants/acme/networks/db/hosts/aws-fra/pg-2", headers=acme
        ).status_code
        == 404
    )
    shrink = api.client.delete("/v1/tenants/acme/networks/db/sites/aws-fra", headers=acme)
    assert shrink.status_code == 200 and shrink.json()["network"]["layer2"] is False

    gone = api.client.delete("/v1/tenants/acme/networks/db", headers=acme)
    assert gone.status_code == 200
    assert api.client.get("/v1/tenants/acme/networks/db", headers=acme).status_code == 404
    assert [n.name for n in api.intent().tenants[0].networks] == ["front", "shared"]


def _hosts(api: Api, tenant: str, network: str) -> dict[str, tuple[str, str]]:
    got = api.client.get(f"/v1/tenants/{tenant}/networks/{network}", headers=api.admin).json()
    return {f"{h['site']}/{h['name']}": (h["address"], h["mac"]) for h in got["hosts"]}


def test_a_detach_never_renumbers_the_other_hosts(api: Api) -> None:
    """Hosts without address: take .1, .2, ... in list order and their MACs are hashed
    from their addresses: detaching web-1 must not move web-2 to .1 with web-1's MAC."""
    acme = api.tenant("acme")
    add = api.client.post(
        "/v1/tenants/acme/networks/front/hosts", headers=acme, json={"name": "i3s/web-3"}
    )
    assert add.status_code == 201, add.text
    before = _hosts(api, "acme", "front")
    assert before["i3s/web-2"][0] == "192.168.1.2"
    det = api.client.delete("/v1/tenants/acme/networks/front/hosts/i3s/web-1", headers=acme)
    assert det.status_code == 200, det.text
    after = _hosts(api, "acme", "front")
    assert after == {k: v for k, v in before.items() if k != "i3s/web-1"}
    # on the fake target, every address (re)applied is the host's own one (the router's
    # links nKhI are named by list position: those after web-1 are recreated, docs/api.md)
    own = {k.split("/")[1]: v[0] for k, v in before.items()}
    for c in det.json()["changes"]:
        if c.startswith("create address "):
            address, node = c.split()[2].split("/")[0], c.split(":")[0].split(".")[-1]
            assert own[node] == address, c
    # the kept intent says so explicitly, and a new host takes the free .1
    front = api.intent().tenants[0].networks[0]
    assert [(h.name, str(h.address)) for h in front.hosts] == [
        ("i3s/web-2", "192.168.1.2"),
        ("i3s/web-3", "192.168.1.3"),
    ]
    again = api.client.post(
        "/v1/tenants/acme/networks/front/hosts", headers=acme, json={"name": "i3s/web-4"}
    )
    assert again.status_code == 201, again.text
    assert _hosts(api, "acme", "front")["i3s/web-4"][0] == "192.168.1.1"
    assert {k: v for k, v in _hosts(api, "acme", "front").items() if k != "i3s/web-4"} == after


def test_an_attach_at_a_running_hosts_address_is_422_not_a_renumbering(api: Api) -> None:
    acme = api.tenant("acme")
    before = _hosts(api, "acme", "front")
    r = api.client.post(
        "/v1/tenants/acme/networks/front/hosts",
        headers=acme,
        json={"name": "i3s/web-9", "address": "192.168.1.1"},
    )
    assert r.status_code == 422, r.text
    assert _hosts(api, "acme", "front") == before


def test_deleting_a_network_keeps_the_other_networks_hosts(api: Api) -> None:
    acme = api.tenant("acme")
    before = _hosts(api, "acme", "shared")
    r = api.client.delete("/v1/tenants/acme/networks/front", headers=acme)
    assert r.status_code == 200, r.text
    assert _hosts(api, "acme", "shared") == before


def test_move_keeps_address_and_mac_and_needs_a_spanned_site(api: Api) -> None:
    acme = api.tenant("acme")
    before = api.client.get("/v1/tenants/acme/networks/shared", headers=acme).json()
    c1 = next(h for h in before["hosts"] if h["name"] == "c1")
    r = api.client.post(
        "/v1/tenants/acme/networks/shared/hosts/i3s/c1/move",
        headers=acme,
        json={"to_site": "aws-fra"},
    )
    assert r.status_code == 200, r.text
    moved = r.json()["moved"]
    assert moved == {
        "from": "i3s/c1",
        "to": "aws-fra/c1",
        "address": c1["address"],
        "mac": c1["mac"],
    }
    after = {h["name"]: h for h in r.json()["network"]["hosts"]}
    assert after["c1"]["site"] == "aws-fra"
    assert (after["c1"]["address"], after["c1"]["mac"]) == (c1["address"], c1["mac"])
    assert any("pn.tenants.aws-fra.acme.c1" in c for c in r.json()["changes"])

    bad = api.client.post(
        "/v1/tenants/acme/networks/front/hosts/i3s/web-1/move",
        headers=acme,
        json={"to_site": "aws-fra"},
    )
    assert bad.status_code == 422
    problem = bad.json()["detail"][0]
    assert problem["path"] == "tenants[0].networks[0].hosts[0].name"
    # polynimbus.move.moved_intent's own message and hint, not a copy of them
    assert "does not span 'aws-fra'" in problem["message"]
    assert "extend the network first" in problem["hint"]
    assert "networks/front/sites" in problem["hint"]
    same = api.client.post(
        "/v1/tenants/acme/networks/front/hosts/i3s/web-1/move",
        headers=acme,
        json={"to_site": "i3s"},
    )
    assert same.status_code == 409


def test_move_reads_the_intent_under_the_write_lock(api: Api) -> None:
    """A change landing while a move waits for the lock is kept: the move re-reads the
    intent once it holds the lock (it moved c1, not whatever host took c1's index)."""
    acme = api.tenant("acme")
    answers: list[Any] = []

    def move() -> None:
        answers.append(
            api.client.post(
                "/v1/tenants/acme/networks/shared/hosts/i3s/c1/move",
                headers=acme,
                json={"to_site": "aws-fra"},
            )
        )

    with api.controller.write_lock:
        mover = threading.Thread(target=move)
        mover.start()
        time.sleep(0.5)  # the move waits for the lock
        doc = yaml.safe_load(state.saved_intent(api.state_dir) or "")
        doc["tenants"][0]["networks"][1]["hosts"].insert(0, "i3s/c0")
        state.save_intent(api.state_dir, yaml.safe_dump(doc))
    mover.join(timeout=30)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    hosts = [h.name for h in api.intent().tenants[0].networks[1].hosts]
    assert hosts == ["i3s/c0", "aws-fra/c1", "aws-fra/c2"]


def _colliding_network() -> str:
    """A network name of acme whose VNI is globex's transit network's (VNIs are hashed
    from ``TENANT/NETWORK``: found offline)."""
    name = "n688366"
    assert vni_of(f"acme/{name}") == vni_of("globex/")
    return name


def test_a_tenants_422_does_not_name_other_tenants(api: Api) -> None:
    """A VNI collision with another tenant's network is found at that tenant's path and
    names it: a tenant sees one generic problem at its own object, the admin sees all."""
    body: dict[str, Any] = {"name": _colliding_network(), "subnet": "10.77.0.0/24"}
    body["sites"] = ["i3s"]
    r = api.client.post("/v1/tenants/acme/networks", headers=api.tenant("acme"), json=body)
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "path": "tenants[0].networks[2]",
            "message": "this change conflicts with the lab's configuration",
            "hint": "ask the lab's administrator",
        }
    ]
    assert "globex" not in r.text
    admin = api.client.post("/v1/tenants/acme/networks", headers=api.admin, json=body)
    assert admin.status_code == 422
    assert paths(admin) == ["tenants[1]"] and "globex/" in admin.text
    # problems about the tenant's own objects stay as they are, beside the generic one
    body["hosts"] = [{"name": "i3s/x", "address": "10.78.0.1"}]
    both = api.client.post("/v1/tenants/acme/networks", headers=api.tenant("acme"), json=body)
    assert paths(both) == ["tenants[0].networks[2].hosts[0].address", "tenants[0].networks[2]"]
    assert "globex" not in both.text


def test_a_tenants_422_does_not_list_other_tenants_rates(tmp_path: Path) -> None:
    """Rates adding up above a site's underlay rate, found at the caller's own path but
    listing the other tenants' names and rates: generic for the tenant."""
    text = EXAMPLE.read_text().replace("{rate: 200mbit}", "{rate: 120mbit}")
    text = text.replace(
        "sites: [azure-weu]\n        hosts: [azure-weu/db-1]",
        "sites: [aws-fra]\n        hosts: [aws-fra/db-1]",
    )
    a = Api(tmp_path / "state", text)
    try:
        url = "/v1/tenants/globex/networks/front/sites"
        r = a.client.post(url, headers=a.tenant("globex"), json={"site": "i3s"})
        assert r.status_code == 422
        assert "acme" not in r.text and "100" not in r.text
        assert paths(r) == ["tenants[1].networks[0]"]
        admin = a.client.post(url, headers=a.admin, json={"site": "i3s"})
        assert admin.status_code == 422 and "acme 100 Mbit/s" in admin.text
    finally:
        a.controller.store.close()


def test_a_tenants_answer_lists_only_its_own_changes(api: Api) -> None:
    """An apply also converges what changed beside the API (here an acme host added to
    the lab's intent): globex's answer lists only the changes on globex's nodes."""
    doc = yaml.safe_load(state.saved_intent(api.state_dir) or "")
    doc["tenants"][0]["networks"][0]["hosts"].append("i3s/web-9")
    state.save_intent(api.state_dir, yaml.safe_dump(doc))
    r = api.client.post(
        "/v1/tenants/globex/networks/front/hosts",
        headers=api.tenant("globex"),
        json={"name": "aws-fra/web-2"},
    )
    assert r.status_code == 201, r.text
    changes = r.json()["changes"]
    assert any("pn.tenants.aws-fra.globex.web-2" in c for c in changes)
    assert all(".globex." in c.split(": ")[0] for c in changes), changes
    assert "acme" not in r.text
    assert sum(r.json()["counts"].values()) == len(changes)
    # acme's host was made by that apply all the same
    made = [key for action, key in api.controller.applier._target.ops if action == "create"]  # type: ignore[attr-defined]
    assert ("netns", "pn.tenants.i3s.acme.web-9", ()) in made


# ------------------------------------------------------------------------ errors
def test_bad_bodies_are_422_with_request_paths(api: Api) -> None:
    acme = api.tenant("acme")
    r = api.client.post(
        "/v1/tenants/acme/networks", headers=acme, json={"name": "x", "subnet": 5, "color": 1}
    )
    assert r.status_code == 422
    assert sorted(paths(r)) == ["body.color", "body.sites", "body.subnet"]
    hints = {p["path"]: p["hint"] for p in r.json()["detail"]}
    assert "remove it" in hints["body.color"] and "add it" in hints["body.sites"]
    raw = api.client.post(
        "/v1/tenants/acme/networks",
        headers={**acme, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert raw.status_code == 422 and paths(raw)[0].startswith("body")
    nested = api.client.post(
        "/v1/tenants/acme/networks",
        headers=acme,
        json={"name": "x", "subnet": "10.9.0.0/24", "sites": ["i3s"], "hosts": [{"nom": "a"}]},
    )
    assert nested.status_code == 422
    assert sorted(paths(nested)) == ["body.hosts[0].name", "body.hosts[0].nom"]
    bad_version = api.client.get("/v1/admin/versions/abc", headers=api.admin)
    assert bad_version.status_code == 422 and paths(bad_version) == ["path.version"]


def test_every_intent_problem_at_once_with_its_yaml_path(api: Api) -> None:
    body = {
        "name": "BAD NAME",
        "subnet": "10.99.0.0/33",
        "sites": ["i3s", "nowhere"],
        "hosts": ["i3s/ok", "no-slash"],
    }
    r = api.client.post("/v1/tenants/acme/networks", headers=api.tenant("acme"), json=body)
    assert r.status_code == 422
    got = paths(r)
    for expected in (
        "tenants[0].networks[2].name",
        "tenants[0].networks[2].subnet",
        "tenants[0].networks[2].hosts[1].name",
    ):
        assert expected in got, got
    assert all(p["message"] for p in r.json()["detail"])
    assert api.intent() == load_intent_text(api.text, "example")


def test_the_lab_down_is_409_not_500(api: Api) -> None:
    (api.state_dir / state.INTENT_FILE).unlink()
    r = api.client.get("/v1/admin/tenants", headers=api.admin)
    assert r.status_code == 409 and "not up" in r.json()["detail"]
    w = api.client.patch("/v1/admin/tenants/acme", headers=api.admin, json={"rate": "1mbit"})
    assert w.status_code == 409


# ------------------------------------------------------------------------ state
def test_the_lab_s_saved_intent_is_the_source_of_truth(api: Api) -> None:
    """A change made beside the API (``snapshot restore``, ``up``) is what the next request
    sees, and is recorded as a version of its own before the API's next change."""
    doc = yaml.safe_load(state.saved_intent(api.state_dir) or "")
    doc["tenants"] = doc["tenants"][:1]
    state.save_intent(api.state_dir, yaml.safe_dump(doc))
    r = api.client.get("/v1/admin/tenants", headers=api.admin)
    assert [t["name"] for t in r.json()] == ["acme"]
    assert api.client.get("/v1/tenants/globex", headers=api.tenant("globex")).status_code == 401
    w = api.client.patch("/v1/admin/tenants/acme", headers=api.admin, json={"rate": "90mbit"})
    assert w.status_code == 200 and w.json()["version"] == 3
    versions = api.client.get("/v1/admin/versions", headers=api.admin).json()
    assert [v["who"] for v in versions] == [
        "serve: the intent file",
        "found in the lab",
        "admin: rate of tenant acme: 90mbit",
    ]


def test_versions_start_with_the_intent_file(api: Api) -> None:
    v1 = api.client.get("/v1/admin/versions/1", headers=api.admin).json()
    assert v1["yaml"] == api.text  # the file itself, comments and all
    api.client.patch("/v1/admin/tenants/acme", headers=api.admin, json={"rate": "90mbit"})
    api.client.patch("/v1/admin/tenants/acme", headers=api.admin, json={"rate": "90mbit"})
    versions = api.client.get("/v1/admin/versions", headers=api.admin).json()
    assert [v["version"] for v in versions] == [1, 2]  # no change, no version
    v2 = api.client.get("/v1/admin/versions/2", headers=api.admin).json()
    assert load_intent_text(v2["yaml"], "v2").tenants[0].rate == "90mbit"
    assert api.client.get("/v1/admin/versions/9", headers=api.admin).status_code == 404
    text = api.client.get("/v1/admin/intent", headers=api.admin)
    assert text.headers["content-type"].startswith("application/yaml")
    assert load_intent_text(text.text, "intent") == api.intent()


def test_secrets_are_0600_and_survive_a_restart(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    first = Api(sdir)
    tokens = first.controller.store.tokens()
    first.controller.store.close()
    for name in ("admin.token", "api.sqlite"):
        mode = stat.S_IMODE(os.lstat(sdir / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    again = Api(sdir)
    assert again.admin_token == first.admin_token
    assert again.controller.store.tokens() == tokens
    assert len(again.controller.store.versions()) == 1  # same intent: no new version
    again.controller.store.close()


def test_an_unsafe_secret_file_is_refused(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    Api(sdir).controller.store.close()
    os.chmod(sdir / "admin.token", 0o644)
    from polynimbus.errors import StateError

    with pytest.raises(StateError, match="mode 0600"):
        Api(sdir)


def test_down_removes_the_api_files(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    Api(sdir).controller.store.close()
    removal = state.remove(sdir, "tenants")
    assert not sdir.exists(), removal


def _serve_and_interrupt(state_dir: Path, host: str) -> tuple[int, str]:
    """``polynimbus serve --target fake`` interrupted (SIGINT) as soon as it prints its
    address; its status and its standard error."""
    argv = [str(Path(sys.executable).with_name("polynimbus")), "serve", str(EXAMPLE)]
    argv += ["--target", "fake"]
    argv += ["--host", host, "--port", "0", "--state-dir", str(state_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving on" in line:
                proc.send_signal(signal.SIGINT)
                break
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_ctrl_c_stops_serve_with_status_0_and_a_public_host_is_warned(
    tmp_path: Path, host: str
) -> None:
    """Ctrl-C right after the address is printed (before uvicorn started) is the clean
    stop of the docs: status 0. Listening beyond loopback works, with a warning on stderr
    (tokens in clear HTTP)."""
    code, stderr = _serve_and_interrupt(tmp_path / "state", host)
    assert code == 0, stderr
    assert "stopped serving" in stderr and "interrupted" not in stderr
    assert ("no TLS" in stderr) is (host == "0.0.0.0"), stderr


def test_openapi_documents_every_endpoint(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert len(ops) == 24
    assert api.client.get("/docs").status_code == 200


# ------------------------------------------------------------------------ export
def test_export_round_trips(api: Api, tmp_path: Path) -> None:
    api.client.post(
        "/v1/tenants/acme/networks/shared/hosts",
        headers=api.tenant("acme"),
        json={"name": "aws-fra/c3"},
    )
    runner = CliRunner()
    r = runner.invoke(cli_app, ["export", "--state-dir", str(api.state_dir)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("# the intent of lab tenants")
    f = tmp_path / "f.yaml"
    f.write_text(r.output)
    v = runner.invoke(cli_app, ["validate", str(f)])
    assert v.exit_code == 0, v.output
    exported = load_intent_text(f.read_text(), "f.yaml")
    assert exported == api.intent()
    assert "aws-fra/c3" in intent_yaml(exported)


def test_export_without_an_intent_says_so(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli_app, ["export", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1
    assert "no intent is kept" in r.output


# ------------------------------------------------------------------------ fuzz
def test_fuzz_no_5xx(api: Api) -> None:
    """schemathesis generates requests from the app's own OpenAPI document (with the
    admin's token, so that they reach the handlers, and with a tenant's); no answer may be
    a 5xx. Deterministic (derandomized), about 20 s."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    strategies = [op.ok().as_strategy() for op in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(strategies) == 24
    acme = api.tenant("acme")
    seen: dict[int, int] = {}

    known = {
        "tenant": ["acme", "globex"],
        "network": ["front", "shared", "back"],
        "site": ["i3s", "aws-fra", "azure-weu"],
        "host": ["web-1", "c1", "app-1", "worker-1"],
    }

    @settings(
        max_examples=400,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), as_admin=st.booleans(), data=st.data())
    def run(case: Any, as_admin: bool, data: Any) -> None:
        # Half the time, path parameters name things that exist, so that requests get past
        # the lookups into the handlers' deeper code (random names only reach a 404).
        for name, values in known.items():
            if name in (case.path_parameters or {}) and data.draw(st.booleans()):
                case.path_parameters[name] = data.draw(st.sampled_from(values))
        headers = api.admin if as_admin else acme
        response = case.call(headers=headers)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(response, checks=[not_a_server_error])

    run()
    assert seen.get(200, 0) + seen.get(201, 0) > 20, seen  # many requests reached a handler
