"""Snapshots without a lab: serialisation (stable, no payloads), differences, the files."""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from polynimbus import state
from polynimbus.cli import app
from polynimbus.node import Address, Link, Netns, NftTable, Route, VethPeer, WireGuardConfig
from polynimbus.resources import Resource
from polynimbus.snapshot import store
from polynimbus.snapshot.model import (
    check_document,
    diff_documents,
    diff_intents,
    diff_resources,
    intent_counts,
    make_document,
    serialise,
)
from polynimbus.snapshot.store import SnapshotError

SECRET = "cGNiOV2Xl+4rEyT4S2LlS03cNeVpUagzQPW3/H7/pHc="
GW = "pn.t.a.gateway"
H1 = "pn.t.a.h1"

INTENT_A = """# the intent of the last polynimbus up of this lab
name: t
overlay: {topology: full-mesh, transport: wireguard}
sites:
  - {name: a, provider: aws, hosts: [h1]}
  - {name: b, provider: azure, hosts: [{name: h2, address: 10.2.0.9}]}
"""
INTENT_B = """name: t
overlay: {topology: mst, transport: wireguard}
sites:
  - {name: a, provider: aws, region: eu-central-1, hosts: [h1, h3]}
  - {name: c, provider: gcp, hosts: [x]}
tenants:
  - name: acme
    networks:
      - {name: front, subnet: 192.168.1.0/24, sites: [a], hosts: [a/w]}
"""


def resources() -> list[Resource]:
    return [
        Resource(H1, Route("default", dev="eth0", via="10.1.0.254")),
        Resource(
            GW, WireGuardConfig("wg1", "0123456789abcdef", f"[Interface]\nPrivateKey = {SECRET}\n")
        ),
        Resource(GW, NftTable("inet", "polynimbus", "table inet polynimbus { }", canonical="[]")),
        Resource(GW, Link("lan0", "bridge", mtu=1500)),
        Resource(GW, Link("h1", "veth", peer=VethPeer(H1, "eth0"))),
        Resource(H1, Address("eth0", "10.1.0.1/24")),
        Resource(GW, Netns()),
        Resource(H1, Netns()),
    ]


def doc(name: str, live: list, intent: str = INTENT_A, version: int = 1) -> dict:
    return make_document(
        name=name,
        lab="t",
        version=version,
        created="2025-01-01T00:00:00Z",
        tool_version="0.3.0",
        intent_yaml=intent,
        plan={"name": "t"},
        live=live,
    )


# ---------------------------------------------------------------------------- serialise
def test_serialise_is_sorted_stable_and_json() -> None:
    rs = resources()
    a = serialise(rs)
    b = serialise(reversed(rs))
    assert a == b
    assert [(e["node"], e["kind"]) for e in a] == sorted((e["node"], e["kind"]) for e in a)
    assert json.loads(json.dumps(a)) == a
    veth = next(e for e in a if e["kind"] == "link" and e["id"] == ["h1"])
    assert veth["spec"]["peer"] == {"node": H1, "name": "eth0", "master": None, "mac": None}
    assert veth["label"] == "link h1 (veth)"
    route = next(e for e in a if e["kind"] == "route")
    assert route["id"] == [4, 254, "default", 0]


def test_serialise_leaves_payloads_out() -> None:
    text = json.dumps(serialise(resources()))
    assert SECRET not in text
    assert "PrivateKey" not in text
    assert "table inet polynimbus {" not in text  # the nft source text (payload)
    wg = next(e for e in serialise(resources()) if e["kind"] == "wgconf")
    assert wg["spec"] == {"digest": "0123456789abcdef", "socket_buffer": None}


def test_document_counts_and_check() -> None:
    d = doc("s", serialise(resources()))
    assert d["counts"] == {
        "sites": 2,
        "hosts": 2,
        "tenants": 0,
        "networks": 0,
        "nodes": 2,
        "resources": 8,
    }
    assert check_document(d) is None
    assert check_document({"tool": "x"}) == "not a polynimbus snapshot"
    assert "schema" in (check_document({**d, "schema": 99}) or "")
    assert "live" in (check_document({**d, "live": "x"}) or "")
    assert intent_counts(INTENT_B) == {"sites": 2, "hosts": 3, "tenants": 1, "networks": 1}


# ---------------------------------------------------------------------------- diff
def test_identical_documents_have_no_differences() -> None:
    live = serialise(resources())
    # comments and layout of the YAML do not count, its data does
    relaid = INTENT_A.replace("# the intent of the last polynimbus up of this lab\n", "")
    d = diff_documents(doc("a", live), doc("b", list(reversed(live)), relaid), "A", "B")
    assert d.identical
    assert d.to_dict()["identical"] is True
    assert d.counts() == {"added": 0, "removed": 0, "changed": 0}


def test_resource_differences_grouped_by_node() -> None:
    before = resources()
    after = [r for r in before if r.node != H1]  # host gone
    after = [r for r in after if not (r.kind == "link" and r.item.ident() == ("h1",))]
    after = [
        Resource(GW, Link("lan0", "bridge", mtu=1400))
        if r.key[:3] == ("link", GW, ("lan0",))
        else r
        for r in after
    ]
    after.append(Resource(GW, Address("lan0", "10.1.0.254/24")))
    changes = diff_resources(serialise(before), serialise(after))
    kinds = {(c.change, c.node, c.kind) for c in changes}
    assert ("removed", H1, "netns") in kinds
    assert ("removed", H1, "route") in kinds
    assert ("removed", GW, "link") in kinds
    assert ("added", GW, "addr") in kinds
    lan = next(c for c in changes if c.change == "changed")
    assert lan.label == "link lan0 (bridge)"
    assert [(f.field, f.a, f.b) for f in lan.fields] == [("mtu", 1500, 1400)]
    assert lan.fields[0].text() == "mtu 1500 -> 1400"
    d = diff_documents(doc("a", serialise(before)), doc("b", serialise(after)), "A", "B")
    assert not d.identical
    assert list(d.by_node()) == [GW, H1]
    assert d.counts() == {"added": 1, "removed": 4, "changed": 1}


def test_large_fields_differ_as_digests() -> None:
    a = serialise([Resource(GW, NftTable("inet", "x", "", canonical="[1]"))])
    b = serialise([Resource(GW, NftTable("inet", "x", "", canonical="[2]"))])
    (c,) = diff_resources(a, b)
    text = c.fields[0].text()
    assert text.startswith("canonical differs (sha256:")
    assert "[1]" not in text
    assert c.to_dict()["fields"][0]["a"].startswith("sha256:")


def test_intent_differences_are_structured() -> None:
    changes = {(c.what, c.name, c.change) for c in diff_intents(INTENT_A, INTENT_B)}
    assert ("overlay", "", "changed") in changes
    assert ("site", "a", "changed") in changes  # region added
    assert ("site", "b", "removed") in changes
    assert ("site", "c", "added") in changes
    assert ("host", "a/h3", "added") in changes
    assert ("host", "b/h2", "removed") in changes
    assert ("host", "c/x", "added") in changes
    assert ("host", "a/h1", "changed") not in changes
    assert ("tenant", "acme", "added") in changes
    assert ("network", "acme/front", "added") in changes
    site_a = next(c for c in diff_intents(INTENT_A, INTENT_B) if c.name == "a")
    assert [f.field for f in site_a.fields] == ["region"]  # hosts are listed on their own
    assert diff_intents(INTENT_A, INTENT_A) == []


def test_a_host_added_shows_in_intent_and_unified_diff() -> None:
    more = INTENT_A.replace("hosts: [h1]", "hosts: [h1, h9]")
    d = diff_documents(doc("a", []), doc("b", [], more), "A", "B")
    assert [c.text() for c in d.intent] == ["+ host a/h9"]
    assert any(line.startswith("+") and "h9" in line for line in d.intent_unified)
    assert d.to_dict()["intent"]["changes"][0] == {
        "what": "host",
        "name": "a/h9",
        "change": "added",
        "fields": [],
    }


# ---------------------------------------------------------------------------- files
@pytest.fixture
def sdir(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "t"
    state.prepare(path, "t")
    return path


def test_write_load_modes_and_versions(sdir: Path) -> None:
    assert store.next_version(sdir) == 1
    assert store.list_names(sdir) == []
    path = store.write(sdir, doc("one", serialise(resources()), version=1))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert store.load(sdir, "one") == doc("one", serialise(resources()))
    assert store.next_version(sdir) == 2
    store.write(sdir, doc("two", [], version=2))
    # replacing 'one' gives it a new, higher version: versions never go back
    with pytest.raises(SnapshotError, match="exists already") as exc:
        store.write(sdir, doc("one", [], version=3))
    assert "--force" in (exc.value.hint or "")
    store.write(sdir, doc("one", [], version=store.next_version(sdir)), force=True)
    docs, problems = store.load_all(sdir)
    assert [(d["name"], d["version"]) for d in docs] == [("two", 2), ("one", 3)]
    assert problems == []
    # the highest version is remembered even when its snapshot is gone
    os.unlink(store.path_of(sdir, "one"))
    assert store.next_version(sdir) == 4


def test_names_missing_and_corrupt_snapshots(sdir: Path) -> None:
    for bad in ("Before", "a/b", "../x", "-x", "", "x" * 40):
        with pytest.raises(SnapshotError, match="not a snapshot name"):
            store.check_name(bad)
    with pytest.raises(SnapshotError, match="no snapshot named 'nope'") as exc:
        store.load(sdir, "nope")
    assert "snapshot save" in (exc.value.hint or "")
    store.write(sdir, doc("good", []))
    with pytest.raises(SnapshotError) as exc:
        store.load(sdir, "nope")
    assert exc.value.hint == "snapshots: good"
    (sdir / "snapshots" / "bad.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="unreadable"):
        store.load(sdir, "bad")
    docs, problems = store.load_all(sdir)
    assert [d["name"] for d in docs] == ["good"]
    assert len(problems) == 1 and "bad" in problems[0]


def test_unsafe_snapshot_directory_is_refused(sdir: Path) -> None:
    (sdir / "snapshots").mkdir(mode=0o755)
    os.chmod(sdir / "snapshots", 0o755)
    with pytest.raises(SnapshotError, match="mode 0700"):
        store.write(sdir, doc("x", []))


def test_symlinked_snapshot_file_is_not_followed(sdir: Path, tmp_path: Path) -> None:
    store.write(sdir, doc("x", []))
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(doc("x", [])))
    os.unlink(store.path_of(sdir, "x"))
    os.symlink(target, store.path_of(sdir, "x"))
    with pytest.raises(SnapshotError, match="unreadable"):
        store.load(sdir, "x")


def test_down_removes_the_snapshots(sdir: Path) -> None:
    store.write(sdir, doc("x", []))
    removal = state.remove(sdir, "t")
    assert removal.kept == []
    assert str(sdir / "snapshots" / "x.json") in removal.removed
    assert not sdir.exists()


# ---------------------------------------------------------------------------- corrupt
def corrupt_variants() -> list[tuple[str, dict, str]]:
    """(what, a corrupt document, a fragment of the problem check_document names)."""
    good = doc("x", serialise(resources()))
    first = good["live"][0]

    def with_entry(**change: object) -> dict:
        return {**good, "live": [{**first, **change}, *good["live"][1:]]}

    no_spec = {k: v for k, v in first.items() if k != "spec"}
    return [
        ("spec a list", with_entry(spec=[1, 2]), "live[0]"),
        ("spec a string", with_entry(spec="x"), "'spec'"),
        ("node not a string", with_entry(node=7), "'node'"),
        (
            "kind missing",
            {**good, "live": [{k: v for k, v in first.items() if k != "kind"}]},
            "'kind'",
        ),
        ("spec missing", {**good, "live": [no_spec]}, "'spec'"),
        ("id not a list", with_entry(id={"a": 1}), "'id'"),
        ("label not a string", with_entry(label=3), "'label'"),
        ("entry not an object", {**good, "live": [3]}, "live[0]"),
        ("duplicate entry", {**good, "live": [first, first]}, "twice"),
        ("intent not YAML", {**good, "intent": "name: t\nsites: [\n"}, "'intent' is not YAML"),
        ("intent nested too deeply", {**good, "intent": "[" * 20000}, "nested too deeply"),
        ("intent a bad date", {**good, "intent": "name: t\nat: 2020-99-99\n"}, "month"),
        ("intent a bad int", {**good, "intent": "name: t\nn: !!int 0x\n"}, "not YAML"),
        ("intent a list", {**good, "intent": "- a\n- b\n"}, "not a YAML mapping"),
        ("intent of another lab", {**good, "intent": "name: u\n"}, "lab 'u'"),
        ("plan a list", {**good, "plan": [1]}, "'plan'"),
        ("plan missing", {k: v for k, v in good.items() if k != "plan"}, "'plan'"),
    ]


@pytest.mark.parametrize(("what", "bad", "fragment"), corrupt_variants())
def test_check_document_names_what_is_wrong(what: str, bad: dict, fragment: str) -> None:
    problem = check_document(bad)
    assert problem is not None, what
    assert fragment in problem, (what, problem)


def test_check_document_accepts_empty_intent_sections() -> None:
    assert check_document(doc("x", [], intent="name: t\n")) is None
    assert check_document(doc("x", serialise(resources()), intent=INTENT_B)) is None


def test_diff_survives_odd_intent_shapes() -> None:
    # valid YAML mappings whose sections have unexpected shapes: compared, never a crash
    odd = "name: t\noverlay: [1]\nsites: 3\nservices: {a: 1}\ntenants: [{name: x, networks: 5}]\n"
    odd2 = "name: t\nsites: [{name: a, hosts: [1, {name: h}]}]\ntenants: x\n"
    d = diff_documents(doc("a", [], intent=odd), doc("b", [], intent=odd2), "A", "B")
    assert not d.identical
    assert intent_counts(odd) == {"sites": 0, "hosts": 0, "tenants": 1, "networks": 0}
    assert intent_counts(odd2)["hosts"] == 2


runner = CliRunner()


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def test_diff_of_a_corrupt_snapshot_is_trouble_not_a_traceback(sdir: Path) -> None:
    store.write(sdir, doc("good", serialise(resources())))
    good = json.loads(store.path_of(sdir, "good").read_text())
    for i, (what, bad, fragment) in enumerate(corrupt_variants()):
        bad = {**bad, "name": f"bad{i}"}
        path = sdir / "snapshots" / f"bad{i}.json"
        path.write_text(json.dumps(bad))
        for args in ((f"bad{i}", "good"), ("good", f"bad{i}")):
            res = cli("snapshot", "diff", *args, "--lab", "t", "--state-dir", sdir)
            assert res.exit_code == 2, (what, res.output, res.exception)
            assert not isinstance(res.exception, Exception) or isinstance(
                res.exception, SystemExit
            ), (what, res.exception)
            assert f"error: snapshot 'bad{i}' ({path}) cannot be used" in res.output, what
            assert fragment in res.output, (what, res.output)
        # restore refuses it the same way, before touching anything (no root needed)
        res = cli("snapshot", "restore", f"bad{i}", "--lab", "t", "--state-dir", sdir)
        assert res.exit_code == 2, (what, res.output)
        assert "cannot be used" in res.output
    # list warns about each and lists the good one
    res = cli("snapshot", "list", "--lab", "t", "--state-dir", sdir, "--json")
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert [d["name"] for d in listed["snapshots"]] == [good["name"]]
    assert len(listed["problems"]) == len(corrupt_variants())


def test_an_intent_nested_too_deeply_is_unusable_everywhere(sdir: Path) -> None:
    """``"[" * 20000`` made the YAML loader raise RecursionError through check_document:
    a traceback from diff, restore, list and save (its next_version)."""
    store.write(sdir, doc("good", serialise(resources()), version=1))
    deep = {**doc("deep", [], version=7), "intent": "[" * 20000}
    (sdir / "snapshots" / "deep.json").write_text(json.dumps(deep))
    with pytest.raises(SnapshotError, match="cannot be used: field 'intent' is not YAML"):
        store.load(sdir, "deep")
    assert store.next_version(sdir) == 2  # what save numbers with: the deep one is skipped
    for args in (("diff", "deep", "good"), ("diff", "good", "deep"), ("restore", "deep")):
        res = cli("snapshot", *args, "--lab", "t", "--state-dir", sdir)
        assert res.exit_code == 2, (args, res.output, res.exception)
        assert isinstance(res.exception, SystemExit | None), (args, res.exception)
        assert "snapshot 'deep'" in res.output and "cannot be used" in res.output, res.output
    for extra in ((), ("--json",)):
        res = cli("snapshot", "list", "--lab", "t", "--state-dir", sdir, *extra)
        assert res.exit_code == 0, (res.output, res.exception)
        assert "good" in res.stdout and "nested too deeply" in res.output


def test_list_prints_stored_text_as_it_is(sdir: Path) -> None:
    """A stored ``created`` (or count) is text, never rich markup: ``[/x]`` raised
    MarkupError."""
    odd = {**doc("odd", []), "created": "[/x]", "counts": {"sites": "[bold]2", "hosts": "[/]"}}
    store.write(sdir, odd)
    res = cli("snapshot", "list", "--lab", "t", "--state-dir", sdir)
    assert res.exit_code == 0, (res.output, res.exception)
    assert "[/x]" in res.stdout and "[bold]2" in res.stdout and "[/]" in res.stdout


def test_diff_of_snapshots_of_different_labs_is_refused(sdir: Path) -> None:
    store.write(sdir, doc("mine", serialise(resources())))
    other = {**doc("theirs", serialise(resources()), intent="name: u\n"), "lab": "u"}
    store.write(sdir, other)
    res = cli("snapshot", "diff", "mine", "theirs", "--lab", "t", "--state-dir", sdir)
    assert res.exit_code == 2, res.output
    assert "different labs" in res.output and "'u'" in res.output
    assert "no differences" not in res.output
    # the lab field edited by hand (the intent still says t): not a usable snapshot
    edited = {**doc("edited", serialise(resources())), "lab": "u"}
    (sdir / "snapshots" / "edited.json").write_text(json.dumps(edited))
    res = cli("snapshot", "diff", "mine", "edited", "--lab", "t", "--state-dir", sdir)
    assert res.exit_code == 2, res.output
    assert "no differences" not in res.output


@pytest.mark.parametrize("command", ["save", "restore", "diff"])
def test_an_invalid_snapshot_name_is_a_bad_command_line(command: str, tmp_path: Path) -> None:
    res = cli("snapshot", command, "Bad_Name", "--lab", "t", "--state-dir", tmp_path / "t")
    assert res.exit_code == 2, res.output
    assert "error: 'Bad_Name' is not a snapshot name" in res.output
    assert "hint:" in res.output


# ---------------------------------------------------------------------------- --help examples
def help_example_lines() -> list[list[str]]:
    """The ``polynimbus snapshot`` example lines of the help texts, in the order the
    README/--help test runs them (``snapshot``, ``snapshot save``), then list, diff and
    restore; cut at two spaces like that test."""
    bin_ = Path(sys.executable).parent / "polynimbus"
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    out = []
    for sub in ([], ["save"], ["list"], ["diff"], ["restore"]):
        text = subprocess.run(
            [str(bin_), "snapshot", *sub, "--help"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        for raw in text.splitlines():
            line = raw.strip().strip("│").strip()
            if line.startswith("polynimbus snapshot "):
                out.append(re.split(r"\s{2,}", line)[0].split())
    return out


def test_help_examples_can_run_in_order() -> None:
    saved: set[str] = set()
    lines = help_example_lines()
    assert len(lines) >= 8, lines
    for argv in lines:
        command = argv[2]
        names_ = list(itertools.takewhile(lambda a: not a.startswith("-"), argv[3:]))
        if command == "save":
            (name,) = names_
            assert "--force" in argv or name not in saved, f"saved twice: {' '.join(argv)}"
            saved.add(name)
        elif command in ("diff", "restore"):
            assert set(names_) <= saved, f"not saved before: {' '.join(argv)}"
    # the --force example comes after the plain save of the same name
    forced = [a for a in lines if a[2] == "save" and "--force" in a]
    assert forced and all(a[3] in saved for a in forced)
