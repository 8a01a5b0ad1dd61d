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
    d = processes.files_dir(tmp_path, "pn.lab.a.gateway")
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


def test_down_removes_daemon_files_and_certificates_but_nothing_foreign(tmp_path):
    sdir = tmp_path / "s"
    state.prepare(sdir, "lab1")
    proc = daemon(["x", "a.conf"], [("a.conf", "one")])
    for ns in ("pn.lab1.a.gateway", "pn.lab1.b.gateway"):
        processes.write_files(processes.files_dir(sdir, ns), proc)
    CertificateAuthority(sdir, "lab1").ensure({"a": None})
    # a killed daemon's control socket stays behind in its directory
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(processes.files_dir(sdir, "pn.lab1.a.gateway") / "charon.vici"))
    sock.close()
    state.remove(sdir, "lab1")
    assert not sdir.exists()

    state.prepare(sdir, "lab1")
    processes.write_files(processes.files_dir(sdir, "pn.lab1.a.gateway"), proc)
    (sdir / "daemons" / "theirs").mkdir()
    (sdir / "daemons" / "theirs" / "note.txt").write_text("keep")
    os.symlink("/", sdir / "daemons" / "link")
    out = state.remove(sdir, "lab1")
    assert (sdir / "daemons" / "theirs" / "note.txt").read_text() == "keep"
    assert not (sdir / "daemons" / "pn.lab1.a.gateway").exists()
    assert str(sdir) in out.kept or any("daemons" in k for k in out.kept)
