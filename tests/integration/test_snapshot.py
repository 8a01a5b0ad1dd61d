"""``polynimbus snapshot`` on a real lab, through the command as a user runs it: save, change
the lab, diff, restore, and the lab is back (namespaces, reachability, verify)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from polynimbus.targets.lab import list_lab_namespaces
from tests.conftest import EXAMPLES

VENV_BIN = Path(sys.executable).parent
POLYNIMBUS = VENV_BIN / "polynimbus"

NAME = "snap-it"
INTENT = f"""name: {NAME}
overlay: {{topology: full-mesh, transport: wireguard}}
sites:
  - {{name: os, provider: openstack, location: {{lat: 43.6, lon: 7.0}}, hosts: [h1]}}
  - {{name: aws, provider: aws, location: {{lat: 50.1, lon: 8.7}}, hosts: [h2]}}
"""
MORE = INTENT.replace("hosts: [h2]", "hosts: [h2, h3]")
H2 = "10.1.0.1"  # aws/h2 (aws = 1, first aws site, first host)


def pn(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return subprocess.run(
        [str(POLYNIMBUS), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def rc(res: subprocess.CompletedProcess[str], want: int) -> subprocess.CompletedProcess[str]:
    assert res.returncode == want, (
        f"{res.args}: rc {res.returncode}, not {want}\n{res.stdout}\n{res.stderr}"
    )
    assert "Traceback" not in res.stderr
    return res


def test_save_change_diff_restore(lab) -> None:
    a = lab.write(INTENT, "a.yaml")
    b = lab.write(MORE, "b.yaml")
    sdir = lab.state(NAME)
    rc(pn("up", a, "--state-dir", sdir), 0)

    # save: the lab's state directory is found from the running lab
    res = rc(pn("snapshot", "save", "before", "--lab", NAME), 0)
    assert "version 1" in res.stdout and "2 hosts" in res.stdout
    path = sdir / "snapshots" / "before.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    text = path.read_text()
    for key in (sdir / "keys").glob("*.key"):
        assert key.read_text().strip() not in text  # no private key in a snapshot
    doc = json.loads(text)
    assert doc["version"] == 1 and doc["lab"] == NAME
    assert doc["counts"]["sites"] == 2 and doc["counts"]["hosts"] == 2
    assert doc["plan"]["name"] == NAME
    assert {"netns", "link", "addr", "route", "wgconf", "nft"} <= {e["kind"] for e in doc["live"]}
    res = rc(pn("snapshot", "save", "before", "--lab", NAME), 1)
    assert "exists already" in res.stderr and "--force" in res.stderr

    # nothing changed yet: no differences, exit 0
    res = rc(pn("snapshot", "diff", "before", "--lab", NAME), 0)
    assert "no differences" in res.stdout

    # change the lab: one more host
    rc(pn("up", b, "--state-dir", sdir), 0)
    new_ns = f"pn.{NAME}.aws.h3"
    assert new_ns in list_lab_namespaces(NAME)
    res = rc(pn("snapshot", "diff", "before", "--lab", NAME), 1)
    assert "+ host aws/h3" in res.stdout
    assert f"+ {new_ns}: namespace added" in res.stdout
    res = rc(pn("snapshot", "diff", "before", "--lab", NAME, "--json"), 1)
    d = json.loads(res.stdout)
    assert d["identical"] is False
    assert {"what": "host", "name": "aws/h3", "change": "added", "fields": []} in d["intent"][
        "changes"
    ]
    added = {(c["node"], c["kind"]) for c in d["resources"]["changes"] if c["change"] == "added"}
    assert (new_ns, "netns") in added
    assert not [c for c in d["resources"]["changes"] if c["change"] == "removed"]

    # two snapshots compare too; versions grow
    res = rc(pn("snapshot", "save", "after", "--lab", NAME), 0)
    assert "version 2" in res.stdout
    rc(pn("snapshot", "diff", "before", "after", "--lab", NAME), 1)
    rc(pn("snapshot", "diff", "after", "--lab", NAME), 0)
    res = rc(pn("snapshot", "list", "--lab", NAME, "--json"), 0)
    listed = json.loads(res.stdout)["snapshots"]
    assert [(s["name"], s["version"], s["counts"]["hosts"]) for s in listed] == [
        ("before", 1, 2),
        ("after", 2, 3),
    ]
    res = rc(pn("snapshot", "list", "--lab", NAME), 0)
    assert "before" in res.stdout and "after" in res.stdout

    # a dry run changes nothing
    res = rc(pn("snapshot", "restore", "before", "--lab", NAME, "--dry-run"), 0)
    assert f"would delete namespace {new_ns}" in res.stdout
    assert new_ns in list_lab_namespaces(NAME)

    # restore: only the difference is undone, and the lab equals the snapshot
    res = rc(pn("snapshot", "restore", "before", "--lab", NAME), 0)
    assert f"delete namespace {new_ns}" in res.stdout
    assert "created" in res.stdout and "the live lab equals the snapshot" in res.stdout
    assert not [ln for ln in res.stdout.splitlines() if ln.strip().startswith("create ")]
    assert new_ns not in list_lab_namespaces(NAME)
    res = rc(pn("snapshot", "diff", "before", "--lab", NAME), 0)
    assert "no differences" in res.stdout
    rc(pn("verify", a, "--state-dir", sdir), 0)
    rc(pn("exec", "--lab", NAME, "os/h1", "--", "ping", "-c", "1", "-W", "2", H2), 0)
    res = rc(pn("snapshot", "restore", "before", "--lab", NAME), 0)
    assert "no changes" in res.stdout

    # keys rotated since: restore cannot bring the old ones back, and says so
    rc(pn("up", a, "--state-dir", sdir, "--rotate-keys"), 0)
    res = rc(pn("snapshot", "diff", "before", "--lab", NAME), 1)
    assert "wireguard config" in res.stdout
    res = rc(pn("snapshot", "restore", "before", "--lab", NAME), 1)
    assert "still differ" in res.stdout
    assert "cannot restore the WireGuard configuration" in res.stderr
    rc(pn("exec", "--lab", NAME, "os/h1", "--", "ping", "-c", "1", "-W", "2", H2), 0)

    # trouble is exit 2 for diff (like diff(1)), with an error and a hint
    res = rc(pn("snapshot", "diff", "nope", "--lab", NAME), 2)
    assert "no snapshot named 'nope'" in res.stderr and "hint: snapshots: after, before" in (
        res.stderr
    )
    # a corrupt snapshot is trouble too (2), named with what is wrong, before the lab is read
    corrupt = json.loads(path.read_text())
    corrupt["name"] = "corrupt"
    corrupt["live"][0]["spec"] = ["not", "a", "mapping"]
    (sdir / "snapshots" / "corrupt.json").write_text(json.dumps(corrupt))
    res = rc(pn("snapshot", "diff", "corrupt", "--lab", NAME), 2)
    assert f"snapshot 'corrupt' ({sdir / 'snapshots' / 'corrupt.json'}) cannot be used" in (
        res.stderr
    )
    assert "live[0]" in res.stderr and "'spec'" in res.stderr
    corrupt["live"][0]["spec"] = {}
    corrupt["intent"] = "name: [unclosed\n"
    (sdir / "snapshots" / "corrupt.json").write_text(json.dumps(corrupt))
    res = rc(pn("snapshot", "diff", "corrupt", "--lab", NAME), 2)
    assert "field 'intent' is not YAML" in res.stderr
    rc(pn("snapshot", "restore", "corrupt", "--lab", NAME), 2)
    # an invalid name is a bad command line: 2 in every subcommand
    for cmd in ("save", "restore", "diff"):
        res = rc(pn("snapshot", cmd, "Bad_Name", "--lab", NAME), 2)
        assert "error: 'Bad_Name' is not a snapshot name" in res.stderr

    # down removes the snapshots with the rest of the state (the fixture checks leftovers)
    rc(pn("down", "--lab", NAME, "--state-dir", sdir), 0)
    assert not (sdir / "snapshots").exists()


# ---------------------------------------------------------------------------- --help examples
HELP_SUBCOMMANDS: tuple[list[str], ...] = ([], ["save"], ["list"], ["diff"], ["restore"])
"""In the order the README/--help test runs them (``snapshot``, then ``snapshot save``),
then the others."""


def help_examples(lab: str) -> list[list[str]]:
    """The ``polynimbus snapshot ...`` example lines of the help texts, in order, as the
    README/--help test extracts them (cut at two spaces), with ``--lab prestocloud`` made
    ``--lab LAB``."""
    out = []
    for sub in HELP_SUBCOMMANDS:
        text = rc(pn("snapshot", *sub, "--help"), 0).stdout
        for raw in text.splitlines():
            line = raw.strip().strip("│").strip()
            if line.startswith("polynimbus snapshot "):
                argv = re.split(r"\s{2,}", line)[0].split()
                assert "--lab" in argv and "prestocloud" in argv, line
                out.append([lab if a == "prestocloud" else a for a in argv])
    return out


def test_help_examples_run_in_order_on_an_unchanged_lab(lab) -> None:
    name = "snap-help"
    path = lab.write(INTENT.replace(f"name: {NAME}", f"name: {name}"), "help.yaml")
    sdir = lab.state(name)
    rc(pn("up", path, "--state-dir", sdir), 0)
    examples = help_examples(name)
    assert len(examples) >= 8, examples
    for argv in examples:
        # every example exits 0 when run in this order: no name saved twice without
        # --force, and the lab did not change, so each diff finds nothing
        res = rc(pn(*argv[1:]), 0)
        if argv[2] == "diff" and "--json" not in argv:
            assert "no differences" in res.stdout
    rc(pn("down", "--lab", name, "--state-dir", sdir), 0)


# ---------------------------------------------------------------------------- tenants
TENANTS_LAB = "snapten"


def test_snapshot_of_a_lab_with_tenants_move_and_restore(lab) -> None:
    """Tenant routers and hosts are namespaces of the lab like any other: a move shows in
    the diff, and restore brings the host back to its site."""
    text = (
        (EXAMPLES / "tenants.yaml")
        .read_text()
        .replace("\nname: tenants\n", f"\nname: {TENANTS_LAB}\n")
    )
    path = lab.write(text, "tenants.yaml")
    sdir = lab.state(TENANTS_LAB)
    rc(pn("up", path, "--state-dir", sdir), 0)
    res = rc(pn("snapshot", "save", "before", "--lab", TENANTS_LAB), 0)
    assert "2 tenants" in res.stdout
    doc = json.loads((sdir / "snapshots" / "before.json").read_text())
    old_c1, new_c1 = f"pn.{TENANTS_LAB}.i3s.acme.c1", f"pn.{TENANTS_LAB}.aws-fra.acme.c1"
    assert old_c1 in {e["node"] for e in doc["live"]}
    assert f"pn.{TENANTS_LAB}.i3s.acme.router" in {e["node"] for e in doc["live"]}
    rc(pn("snapshot", "diff", "before", "--lab", TENANTS_LAB), 0)

    rc(pn("move", "acme:i3s/c1", "aws-fra", "--lab", TENANTS_LAB), 0)
    res = rc(pn("snapshot", "diff", "before", "--lab", TENANTS_LAB), 1)
    assert "~ network acme/shared" in res.stdout
    assert f"+ {new_c1}: namespace added" in res.stdout
    assert f"- {old_c1}: namespace removed" in res.stdout

    res = rc(pn("snapshot", "restore", "before", "--lab", TENANTS_LAB), 0)
    assert "the live lab equals the snapshot" in res.stdout
    assert old_c1 in list_lab_namespaces(TENANTS_LAB)
    assert new_c1 not in list_lab_namespaces(TENANTS_LAB)
    res = rc(pn("snapshot", "diff", "before", "--lab", TENANTS_LAB), 0)
    assert "no differences" in res.stdout
    rc(pn("verify", "--lab", TENANTS_LAB), 0)
    # c1 is back on i3s and reaches c2 (aws-fra) across the stretched network
    rc(
        pn(
            "exec",
            "--lab",
            TENANTS_LAB,
            "acme:i3s/c1",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "172.16.0.50",
        ),
        0,
    )
    rc(pn("down", "--lab", TENANTS_LAB, "--state-dir", sdir), 0)
    assert not list_lab_namespaces(TENANTS_LAB)
