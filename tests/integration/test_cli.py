"""The ``polynimbus`` command as a user runs it: real subprocesses, real labs, always removed.

Every lab built here is named ``cli-*``, except the bundled examples' labs (``prestocloud``,
``federation``, ``aws-regions``) that the README and --help commands use; those are taken
down at the end of the test that builds them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polynimbus import capabilities, names, state
from polynimbus.cli.demo import SRV6_LEFT_OUT
from polynimbus.targets.lab import list_lab_namespaces, list_labs
from tests.integration.conftest import assert_srv6_refused, leftovers, three_sites

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
POLYNIMBUS = VENV_BIN / "polynimbus"
EXAMPLE_LABS = (
    "prestocloud",
    "federation",
    "aws-regions",
    "service-chain",
    "tenants",
    "failover",
    "two-gateways",
)
# the README and --help commands wait this long for labs of other people's tests to go
# (exec without --lab needs the example lab to be the only one on the host)
OTHER_LABS_WAIT_S = 120


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a user with the virtualenv's bin first on PATH; wide, plain help."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra)
    return env


def pn(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """Run ``polynimbus ARGS`` (the virtualenv's console script) and capture its output."""
    return subprocess.run(
        [str(POLYNIMBUS), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or base_env(),
        cwd=cwd,
        timeout=timeout,
    )


def ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, f"{res.args}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def assert_one_error(
    res: subprocess.CompletedProcess[str], code: int, *fragments: str
) -> tuple[str, str | None]:
    """``res`` failed with exit ``code`` and said so in ONE ``error:`` line, optionally
    followed by one ``  hint:`` line, and nothing else (no traceback). Returns both lines."""
    text = f"rc {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == code, text
    assert "Traceback" not in res.stderr + res.stdout, text
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), text
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), text
    for f in fragments:
        assert f in lines[0], f"{f!r} not in the error line\n{text}"
    return lines[0], lines[1] if len(lines) == 2 else None


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else []


def wait_until(cond, timeout: float, step: float = 0.005) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ------------------------------------------------------------------ README and --help
def readme_commands() -> list[str]:
    """Every line of a fenced code block of README.md that runs polynimbus, in order."""
    out, fenced = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced and re.match(r"^(sudo )?polynimbus ", line.strip()):
            out.append(line.strip())
    return out


SRV6_SECTION = "## Service chains with SRv6"


def readme_srv6_commands() -> set[str]:
    """The commands of the README's SRv6 section: the service-chain lab, which a kernel
    without SRv6 cannot build (see :func:`run_doc_command_without_srv6`)."""
    out, fenced, section = set(), False, ""
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            section = line.strip()
        elif fenced and section == SRV6_SECTION and re.match(r"^(sudo )?polynimbus ", line):
            out.add(line.strip())
    return out


def run_doc_command_without_srv6(line: str, env: dict[str, str]) -> None:
    """A documented command of the service-chain lab on a kernel without SRv6: ``up`` ends
    with the SRv6 capability error and builds nothing; ``plan`` and ``validate`` (pure) and
    ``down`` (nothing to remove) run as written; the others (``verify``, ``trace``,
    ``exec``) find no such lab and say so in one error line, exit 1."""
    argv = shlex.split(line, comments=True)
    argv = argv[1:] if argv[0] == "sudo" else argv
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    if argv[1] == "up":
        assert_srv6_refused(res)
        assert list_lab_namespaces("service-chain") == [], line
        assert not (Path(env["XDG_STATE_HOME"]) / "polynimbus" / "service-chain").exists()
    elif argv[1] in ("plan", "validate", "down"):
        assert res.returncode == 0, f"{line!r}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    else:
        assert_one_error(res, 1)


def help_commands() -> list[str]:
    """Every ``polynimbus ...`` command line in the --help of the program and each command,
    in order. Synopsis lines with the FILE placeholder get examples/prestocloud.yaml (FILE
    CHAIN: the chain example and one of its chains)."""
    out: list[str] = []
    for sub in (
        [],
        ["validate"],
        ["plan"],
        ["up"],
        ["verify"],
        ["trace"],
        ["exec"],
        ["monitor"],  # a few seconds of probes, then the report of them
        ["report"],
        ["cut"],  # cut, then heal: the help examples leave the lab whole
        ["heal"],
        ["move"],
        ["snapshot"],
        ["snapshot", "save"],
        ["export"],
        ["down"],
        ["demo"],
    ):
        text = ok(pn(*sub, "--help")).stdout
        for raw in text.splitlines():
            line = raw.strip().strip("│").strip()
            if not line.startswith("polynimbus "):
                continue
            cmd = re.split(r"\s{2,}", line)[0]  # "polynimbus up FILE   build it ..." -> cmd
            cmd = re.sub(r"\bFILE CHAIN\b", "examples/service-chain.yaml web-v4", cmd)
            cmd = re.sub(r"\bFILE\b", "examples/prestocloud.yaml", cmd)
            assert not re.search(r"\b[A-Z]{3,}\b", cmd), f"unrunnable help line: {line!r}"
            out.append(cmd)
    return out


def run_doc_command(line: str, env: dict[str, str], mine: set[str]) -> None:
    """Run one documented command line as written (a trailing # comment is a comment)."""
    argv = shlex.split(line, comments=True)
    if argv[0] == "sudo":  # the README says once that these need root; we are root
        argv = argv[1:]
    assert argv[0] == "polynimbus"
    assert shutil.which("polynimbus", path=env["PATH"]) == str(POLYNIMBUS)
    end = time.monotonic() + OTHER_LABS_WAIT_S
    while True:
        res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        others = set(list_labs()) - mine
        # exec without --lab needs one lab on the host: wait for other tests' labs to go
        if (
            res.returncode != 0
            and "several labs are up" in res.stderr
            and others
            and time.monotonic() < end
        ):
            time.sleep(1)
            continue
        break
    assert res.returncode == 0, f"{line!r}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr


@pytest.fixture
def example_labs(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment for the documented commands (state under tmp), and the bundled
    examples' labs taken down at the end, whatever happened."""
    env = base_env(XDG_STATE_HOME=str(tmp_path / "xdg"))
    try:
        yield env
    finally:
        for name in EXAMPLE_LABS:
            pn("down", "--lab", name, env=env)
            sdir = tmp_path / "xdg" / "polynimbus" / name
            assert leftovers(name, sdir) == []


def test_readme_and_help_commands_run_as_written(example_labs: dict[str, str]) -> None:
    env = example_labs
    readme = readme_commands()
    assert len(readme) >= 7, readme
    assert any(c.startswith("polynimbus exec") for c in readme)
    helps = help_commands()
    assert any(c.startswith("polynimbus exec") for c in helps), helps
    assert any(c.startswith("polynimbus up") for c in helps), helps
    mine = set(EXAMPLE_LABS)
    no_srv6 = set() if capabilities.srv6() else readme_srv6_commands()
    assert capabilities.srv6() or len(no_srv6) >= 5, no_srv6

    for line in readme:
        if line in no_srv6:
            run_doc_command_without_srv6(line, env)
            continue
        run_doc_command(line, env, mine)
    assert "prestocloud" not in list_labs()  # the README ends with down

    # the --help examples: exec needs a lab up (the README's own up)
    ok(pn("up", "examples/prestocloud.yaml", env=env))
    try:
        for line in helps:
            if line.startswith("polynimbus down") or line.startswith("polynimbus demo"):
                continue  # run last: down and demo take the lab away
            if not list_lab_namespaces("prestocloud"):
                ok(pn("up", "examples/prestocloud.yaml", env=env))
            if "acme:" in line:  # a tenant host needs the tenants example's lab
                if not list_lab_namespaces("tenants"):
                    ok(pn("up", "examples/tenants.yaml", env=env))
                run_doc_command(line, env, mine | {"tenants"})
                continue
            if line.startswith("polynimbus trace") and no_srv6:  # no chain lab can exist
                assert_srv6_refused(pn("up", "examples/service-chain.yaml", env=env))
                run_doc_command_without_srv6(line, env)
                continue
            if line.startswith("polynimbus trace"):  # a chain needs the chain example's lab
                ok(pn("up", "examples/service-chain.yaml", env=env))
                try:
                    run_doc_command(line, env, mine)
                finally:
                    ok(pn("down", "examples/service-chain.yaml", env=env))
                continue
            run_doc_command(line, env, mine)
        pn("down", "--lab", "tenants", env=env)
        for line in helps:
            if line.startswith("polynimbus down"):
                run_doc_command(line, env, mine)
    finally:
        pn("down", "--lab", "tenants", env=env)
        pn("down", "--lab", "prestocloud", env=env)
    assert "prestocloud" not in list_labs()


# ------------------------------------------------------------------ exec
def test_exec(lab) -> None:
    name = "cli-exec"
    path = lab.write(three_sites(name))
    sdir = lab.state(name)
    ok(pn("up", path, "--state-dir", sdir))
    aws_host = "10.1.0.1"  # aws/w-1

    # --lab before the target, after it, and as --lab=NAME; ping through the tunnels
    ok(pn("exec", "--lab", name, "os/app-1", "--", "ping", "-c", "1", "-W", "2", aws_host))
    ok(pn("exec", "os/app-1", "--lab", name, "--", "ping", "-c", "1", "-W", "2", aws_host))
    ok(pn("exec", f"--lab={name}", "az/gateway", "--", "ping", "-c", "1", "-W", "2", aws_host))
    res = ok(pn("exec", "--lab", name, "internet", "--", "ip", "-o", "link", "show"))
    assert "u010000" in res.stdout  # ran inside the internet namespace
    # exec exits with the command's status
    assert pn("exec", "--lab", name, "aws/w-1", "--", "sh", "-c", "exit 7").returncode == 7
    # an address nobody has: ping fails, and so does exec
    bad = pn("exec", "--lab", name, "os/app-1", "--", "ping", "-c", "1", "-W", "1", "10.9.9.9")
    assert bad.returncode != 0

    # unknown node, unknown lab, bad target: one line, exit 1, the nodes listed in the hint
    _, hint = assert_one_error(
        pn("exec", "--lab", name, "os/nope", "--", "true"), 1, "no node 'os/nope'", name
    )
    assert hint is not None and "os/app-1" in hint and "aws/gateway" in hint
    assert_one_error(pn("exec", "--lab", "cli-absent", "os/app-1", "--", "true"), 1)
    assert_one_error(pn("exec", "--lab", name, "a/b/c", "--", "true"), 1, "bad target")
    # no command: a clear error, whether or not '--' is there
    for args in (["os/app-1"], ["os/app-1", "--"], ["os/app-1", "--lab", name]):
        assert_one_error(pn("exec", "--lab", name, *args), 1, "no command given")
    assert_one_error(pn("exec", "os/app-1", "--lab"), 1, "--lab needs a lab name")


# ------------------------------------------------------------------ state directory
def test_foreign_state_dir_is_refused_and_untouched(lab, tmp_path: Path) -> None:
    name = "cli-sdir"
    path = lab.write(three_sites(name))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    os.chmod(foreign, 0o751)
    (foreign / "notes.txt").write_text("precious\n")
    before = (listing(foreign), mode(foreign))

    line, _ = assert_one_error(pn("up", path, "--state-dir", foreign), 1, str(foreign))
    assert "not created by polynimbus" in line
    assert (listing(foreign), mode(foreign)) == before
    assert (foreign / "notes.txt").read_text() == "precious\n"
    assert list_lab_namespaces(name) == []  # refused before anything was built

    line, _ = assert_one_error(pn("down", path, "--state-dir", foreign), 1, str(foreign))
    assert "nothing was deleted" in line or "not created by polynimbus" in line
    assert (listing(foreign), mode(foreign)) == before
    assert (foreign / "notes.txt").read_text() == "precious\n"

    # the same lab with a fresh --state-dir: up, then down leaves nothing
    fresh = tmp_path / "fresh" / "state"
    ok(pn("up", path, "--state-dir", fresh))
    assert (fresh / state.MARKER).is_file() and mode(fresh) == 0o700
    ok(pn("down", path, "--state-dir", fresh))
    assert leftovers(name, fresh) == []
    assert not fresh.exists()


# ------------------------------------------------------------------ dry run
def lock_dir_listing() -> list[str]:
    return listing(state.lock_dir())


def test_dry_run_writes_nothing(lab, tmp_path: Path) -> None:
    name = "cli-dry"
    path = lab.write(three_sites(name))
    # a lock file left by an earlier run of this test would hide a dry run creating one
    lock = state.lock_path(name)
    if lock.exists() and not state.is_locked(name):
        lock.unlink()
    parent = tmp_path / "sd"
    parent.mkdir()
    sdir = parent / "state"
    locks_before, parent_before = lock_dir_listing(), listing(parent)

    res = ok(pn("up", path, "--state-dir", sdir, "--dry-run"))
    assert "would create namespace" in res.stdout and "dry run; nothing changed" in res.stdout
    assert lock_dir_listing() == locks_before  # no lock file
    assert listing(parent) == parent_before and not sdir.exists()  # no dir, no key
    assert list_lab_namespaces(name) == []

    # on a lab that is up, --rotate-keys in a dry run: keys untouched, configs reported
    ok(pn("up", path, "--state-dir", sdir))
    keys = {p.name: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (sdir / "keys").iterdir()}
    assert len(keys) == 3
    res = ok(pn("up", path, "--state-dir", sdir, "--dry-run", "--rotate-keys"))
    would = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("would ")]
    text = " ".join(res.stdout.split())  # rich wraps long lines
    assert would and all("wireguard config" in ln for ln in would), res.stdout
    assert text.count("would update wireguard config") == 3, res.stdout
    after = {p.name: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (sdir / "keys").iterdir()}
    assert after == keys
    res = ok(pn("up", path, "--state-dir", sdir))
    assert "no changes" in res.stdout, res.stdout


# ------------------------------------------------------------------ failure paths
def test_failure_paths_end_in_one_error_line(lab, tmp_path: Path) -> None:
    name = "cli-fail"
    path = lab.write(three_sites(name))
    sdir = lab.state(name)

    # a missing ip: a PATH with every command of the system but ip
    nobin = tmp_path / "no-ip-bin"
    nobin.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(d):
            continue
        for entry in os.listdir(d):
            if entry != "ip" and not (nobin / entry).exists():
                (nobin / entry).symlink_to(os.path.join(d, entry))
    res = pn("up", path, "--state-dir", sdir, env=base_env(PATH=f"{VENV_BIN}:{nobin}"))
    _, hint = assert_one_error(res, 1, "missing tool: ip", "iproute2")
    assert hint is not None and "apt-get install iproute2" in hint
    assert not sdir.exists() and list_lab_namespaces(name) == []

    # a failing setsid (the daemons are started through it)
    fakebin = tmp_path / "fake-setsid"
    fakebin.mkdir()
    (fakebin / "setsid").write_text("#!/bin/sh\nexit 1\n")
    os.chmod(fakebin / "setsid", 0o755)
    res = pn("up", path, "--state-dir", sdir, env=base_env(PATH=f"{fakebin}:{base_env()['PATH']}"))
    assert_one_error(res, 1, "setsid exited 1")
    # ... and the next up completes it
    ok(pn("up", path, "--state-dir", sdir))

    key = sdir / "keys" / "os.key"
    good = key.read_bytes()
    # a corrupt key file, mode 0600
    key.write_bytes(b"this is not a key\n")
    os.chmod(key, 0o600)
    _, hint = assert_one_error(pn("up", path, "--state-dir", sdir), 1, str(key), "corrupt")
    assert hint is not None and "--rotate-keys" in hint
    assert key.read_bytes() == b"this is not a key\n"  # never silently replaced
    # a good key with mode 0644
    key.write_bytes(good)
    os.chmod(key, 0o644)
    assert_one_error(pn("up", path, "--state-dir", sdir), 1, str(key), "mode 0644")
    assert mode(key) == 0o644 and key.read_bytes() == good
    os.chmod(key, 0o600)
    assert "no changes" in ok(pn("up", path, "--state-dir", sdir)).stdout


def test_missing_setsid_names_its_debian_package(lab, tmp_path: Path) -> None:
    name = "cli-nosetsid"
    path = lab.write(three_sites(name))
    nobin = tmp_path / "no-setsid-bin"
    nobin.mkdir()
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for entry in os.listdir(d):
            if entry != "setsid" and not (nobin / entry).exists():
                (nobin / entry).symlink_to(os.path.join(d, entry))
    res = pn("up", path, "--state-dir", lab.state(name), env=base_env(PATH=f"{VENV_BIN}:{nobin}"))
    assert_one_error(res, 1, "missing tool: setsid", "util-linux")


# ------------------------------------------------------------------ lock and tags
def six_sites(name: str) -> str:
    """Six sites, a few hosts each: an up that lasts long enough to be caught mid-way."""
    providers = ["openstack", "aws", "azure", "gcp", "onprem", "edge"]
    sites = "".join(
        f"  - name: s{i}\n    provider: {p}\n    location: {{lat: {40 + i}, lon: {i * 7}}}\n"
        f"    hosts: [h-1, h-2, h-3]\n"
        for i, p in enumerate(providers)
    )
    return f"name: {name}\noverlay:\n  topology: full-mesh\n  transport: wireguard\nsites:\n{sites}"


def test_second_up_of_a_lab_is_refused_while_the_first_runs(lab, tmp_path: Path) -> None:
    name = "cli-lock"
    path = lab.write(six_sites(name))
    other = tmp_path / "other-state"
    first = subprocess.Popen(
        [str(POLYNIMBUS), "up", str(path), "--state-dir", str(lab.state(name))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base_env(),
        cwd=REPO,
    )
    try:
        assert wait_until(lambda: state.is_locked(name), timeout=30), "the first up never locked"
        second = pn("up", path, "--state-dir", other)
        first_rc = first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first_rc == 0, first.stderr.read() if first.stderr else ""
    line, hint = assert_one_error(
        second, 1, "another polynimbus command", f"(pid {first.pid})", f"lab {name!r}"
    )
    assert hint is not None and str(state.lock_path(name)) in hint
    assert not other.exists()  # refused before touching its state directory


def colliding_names() -> tuple[str, str]:
    seen: dict[str, str] = {}
    for i in range(100_000):
        n = f"cli-t{i}"
        t = names.lab_tag(n)
        if t in seen:
            return seen[t], n
        seen[t] = n
    raise AssertionError("no tag collision found")


def test_tag_collision_is_refused_naming_both(lab) -> None:
    a, b = colliding_names()
    assert names.lab_tag(a) == names.lab_tag(b) and a != b
    pa, pb = lab.write(three_sites(a), "a.yaml"), lab.write(three_sites(b), "b.yaml")
    ok(pn("up", pa, "--state-dir", lab.state(a)))
    line, _ = assert_one_error(
        pn("up", pb, "--state-dir", lab.state(b)), 1, repr(a), repr(b), names.lab_tag(a)
    )
    assert list_lab_namespaces(b) == [] and not lab.state(b).exists()
    # once the first is down, the second comes up
    ok(pn("down", pa, "--state-dir", lab.state(a)))
    ok(pn("up", pb, "--state-dir", lab.state(b)))


# ------------------------------------------------------------------ down --lab, demo
def test_down_by_lab_name_without_the_file(lab) -> None:
    name = "cli-downlab"
    path = lab.write(three_sites(name))
    sdir = lab.state(name)
    ok(pn("up", path, "--state-dir", sdir))
    path.unlink()
    res = ok(pn("down", "--lab", name, "--state-dir", sdir))
    assert f"lab {name!r} removed" in res.stdout
    assert leftovers(name, sdir) == []
    res = ok(pn("down", "--lab", name, "--state-dir", sdir))
    assert "nothing to remove" in res.stdout
    # neither or both of FILE and --lab: a usage error in one line
    assert_one_error(pn("down"), 1, "give the intent FILE or --lab NAME")
    assert_one_error(pn("down", "examples/prestocloud.yaml", "--lab", name), 1, "one of them")


def test_make_demo_end_to_end(tmp_path: Path) -> None:
    """The README's first command, as written: make demo (deps and venv are already there,
    so it goes straight to polynimbus demo)."""
    env = base_env(XDG_STATE_HOME=str(tmp_path / "xdg"))
    sdir = tmp_path / "xdg" / "polynimbus" / "prestocloud"
    assert "make demo" in (REPO / "README.md").read_text()
    try:
        res = subprocess.run(
            ["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
        assert "lab 'prestocloud' removed" in res.stdout
        assert "20/20 host pairs reachable" in " ".join(res.stdout.split())
        if capabilities.srv6():
            assert "lab 'service-chain' removed" in res.stdout
            assert "4/4 chain directions proved" in res.stdout
        else:  # the demo says it left the chains out, and built none
            assert SRV6_LEFT_OUT in " ".join(res.stdout.split()), res.stdout
            assert "service-chain" not in res.stdout.replace("service-chain part", "")
            assert "lab 'tenants' removed" in res.stdout
    finally:
        pn("down", "--lab", "prestocloud", env=env)
        pn("down", "--lab", "service-chain", env=env)
    assert leftovers("prestocloud", sdir) == []
    assert leftovers("service-chain", tmp_path / "xdg" / "polynimbus" / "service-chain") == []
