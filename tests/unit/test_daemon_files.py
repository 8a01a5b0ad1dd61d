"""Files of tunnel daemons: written 0600 where the daemon runs, removed by ``down``."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from polynimbus import state
from polynimbus.errors import ApplyError
from polynimbus.node import Process
from polynimbus.pki import CertificateAuthority
from polynimbus.targets.lab import processes
from polynimbus.tunnels.base import daemon


def test_daemon_digest_covers_argv_and_every_file():
    a = daemon(["openvpn", "--config", "t.conf"], [("t.conf", "x"), ("k.pem", "secret")])
    assert a.name == "openvpn:t.conf"
    assert a == daemon(["openvpn", "--config", "t.conf"], [("k.pem", "secret"), ("t.conf", "x")])
    assert a.digest != daemon(["openvpn", "--config", "t.conf"], [("t.conf", "x")]).digest
    assert (
        a.digest
        != daemon(["openvpn", "--config", "t.conf"], [("t.conf", "y"), ("k.pem", "secret")]).digest
    )
    assert "secret" not in repr(a)
    assert daemon(["A_B=x.conf", "/usr/sbin/charon-systemd", "ipsec0"]).name == (
        "charon-systemd:ipsec0"
    )
    # the digest is compared, the files (a payload) are not
    assert ("digest", a.digest) in a.spec() and all(k != "files" for k, _ in a.spec())


def test_files_are_private_from_the_first_byte_and_cannot_leave_their_directory(tmp_path):
    proc = daemon(["x", "a.conf"], [("a.conf", "one"), ("b.key", "two")])
    d = processes.files_dir(tmp_path, "pn.lab.a.gateway", proc.name)
    processes.write_files(d, proc)
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(d.parent).st_mode) == 0o700
    assert {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in d.iterdir()} == {
        "a.conf": 0o600,
        "b.key": 0o600,
    }
    # an existing world-readable file is replaced by a new private one, not rewritten
    os.chmod(d / "a.conf", 0o644)
    processes.write_files(d, proc)
    assert stat.S_IMODE(os.lstat(d / "a.conf").st_mode) == 0o600
    with pytest.raises(ApplyError, match="leaves"):
        processes.write_files(d, Process("x:y", ("x",), files=(("../evil", "z"),), digest="1"))
    assert not (d.parent / "evil").exists()


def test_down_removes_daemon_files_and_certificates_but_nothing_foreign(tmp_path, monkeypatch):
    sdir = tmp_path / "s"
    state.prepare(sdir, "lab1")
    proc = daemon(["x", "a.conf"], [("a.conf", "one")])
    for ns in ("pn.lab1.a.gateway", "pn.lab1.b.gateway"):
        processes.write_files(processes.files_dir(sdir, ns, proc.name), proc)
    CertificateAuthority(sdir, "lab1").ensure({"a": None})
    # a killed daemon's control socket stays behind in its directory
    sock = socket.socket(socket.AF_UNIX)
    with monkeypatch.context() as m:  # a relative path, as the daemons bind it
        m.chdir(processes.files_dir(sdir, "pn.lab1.a.gateway", proc.name))
        sock.bind("charon.vici")
    sock.close()
    state.remove(sdir, "lab1")
    assert not sdir.exists()

    state.prepare(sdir, "lab1")
    processes.write_files(processes.files_dir(sdir, "pn.lab1.a.gateway", proc.name), proc)
    (sdir / "daemons" / "theirs").mkdir()
    (sdir / "daemons" / "theirs" / "note.txt").write_text("keep")
    os.symlink("/", sdir / "daemons" / "link")
    out = state.remove(sdir, "lab1")
    assert (sdir / "daemons" / "theirs" / "note.txt").read_text() == "keep"
    assert not processes.files_dir(sdir, "pn.lab1.a.gateway", proc.name).exists()
    assert str(sdir) in out.kept or any("daemons" in k for k in out.kept)


def test_prune_removes_the_files_of_processes_no_longer_wanted_only(tmp_path):
    from polynimbus.resources import Resource

    keep = daemon(["openvpn", "--config", "ov1.conf"], [("ov1.conf", "key 1")])
    gone = daemon(["openvpn", "--config", "ov2.conf"], [("ov2.conf", "key 2")])
    other_lab = daemon(["nebula", "-config", "nb.yml"], [("nb.yml", "theirs")])
    for ns, proc in (
        ("pn.lab1.a.gateway", keep),
        ("pn.lab1.a.gateway", gone),
        ("pn.lab1.b.gateway", gone),
        ("pn.lab10.a.gateway", other_lab),
    ):
        processes.write_files(processes.files_dir(tmp_path, ns, proc.name), proc)
    desired = [Resource("pn.lab1.a.gateway", keep)]
    # a scoped apply judges only its nodes
    removed = processes.prune_files(tmp_path, "pn.lab1.", desired, nodes={"pn.lab1.b.gateway"})
    assert removed == [str(processes.files_dir(tmp_path, "pn.lab1.b.gateway", gone.name))]
    assert processes.files_dir(tmp_path, "pn.lab1.a.gateway", gone.name).exists()
    removed = processes.prune_files(tmp_path, "pn.lab1.", desired)
    assert removed == [str(processes.files_dir(tmp_path, "pn.lab1.a.gateway", gone.name))]
    assert (processes.files_dir(tmp_path, "pn.lab1.a.gateway", keep.name) / "ov1.conf").exists()
    assert processes.files_dir(tmp_path, "pn.lab10.a.gateway", other_lab.name).exists()


def test_credentials_of_a_transport_no_longer_used_are_removed(tmp_path):
    from polynimbus.intent import load_intent_text
    from polynimbus.orchestrate import _prune_secrets
    from polynimbus.plan import build_plan

    sdir = tmp_path / "s"
    state.prepare(sdir, "lab1")
    CertificateAuthority(sdir, "lab1").ensure({"a": None})
    text = "name: lab1\noverlay: {{transport: {t}}}\nsites:\n  - {{name: a, provider: aws}}\n"
    _prune_secrets(build_plan(load_intent_text(text.format(t="openvpn"))), sdir, [], None)
    assert (sdir / "pki" / "ca.key").exists()
    _prune_secrets(build_plan(load_intent_text(text.format(t="wireguard"))), sdir, [], None)
    assert not (sdir / "pki").exists()


def test_no_file_holds_a_byte_before_it_is_private(tmp_path, monkeypatch):
    """Written 0600 from the first byte, not written then narrowed: with a umask that
    narrows nothing, every change of a regular file's mode must find it still empty, and
    every file must end 0600 (its creation mode, or a change before any byte)."""
    changes: list[tuple[str, int, int]] = []

    def guard(what: str, st: os.stat_result, mode: int) -> None:
        if stat.S_ISREG(st.st_mode):
            changes.append((what, st.st_size, mode))
            assert st.st_size == 0, f"{what}: mode {mode:o} set on a file holding bytes already"

    real_chmod, real_fchmod = os.chmod, os.fchmod

    def chmod(path, mode, *args, **kwargs):
        if isinstance(path, int):
            guard(f"fd {path}", os.fstat(path), mode)
        elif os.path.lexists(path):
            guard(str(path), os.lstat(path), mode)
        return real_chmod(path, mode, *args, **kwargs)

    def fchmod(fd, mode):
        guard(f"fd {fd}", os.fstat(fd), mode)
        return real_fchmod(fd, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    monkeypatch.setattr(os, "fchmod", fchmod)
    if hasattr(os, "lchmod"):
        monkeypatch.setattr(os, "lchmod", lambda path, mode: chmod(path, mode))
    proc = daemon(["x", "a.conf"], [("a.conf", "config"), ("b.key", "SECRET KEY")])
    d = tmp_path / "daemons" / "node"
    old = os.umask(0)
    try:
        processes.write_files(d, proc)
        processes.write_files(d, proc)  # over the files of a previous start
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in d.iterdir()} == {
        "a.conf": 0o600,
        "b.key": 0o600,
    }
    assert (d / "b.key").read_text() == "SECRET KEY"
