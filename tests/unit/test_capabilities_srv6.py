"""SRv6 detection (:func:`polynimbus.capabilities.srv6`) with the kernel faked: the probe's
commands answered yes or no, its namespace always deleted; without root, the kernel's
configuration file."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from polynimbus import capabilities
from polynimbus.errors import CapabilityError


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    capabilities._srv6_cached.cache_clear()
    yield
    capabilities._srv6_cached.cache_clear()


class FakeIp:
    """``subprocess.run`` of ``ip``: records each command; ``fail`` (a word such as
    ``seg6local``) makes the commands holding it exit 2, ``raise_on`` raise a timeout."""

    def __init__(self, fail: str | None = None, raise_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail, self.raise_on = fail, raise_on

    def __call__(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        assert argv[0] == "ip" and kw.get("timeout")
        self.calls.append(argv)
        if self.raise_on and self.raise_on in argv:
            raise subprocess.TimeoutExpired(argv, 10)
        rc = 2 if self.fail and self.fail in argv else 0
        return subprocess.CompletedProcess(argv, rc, b"", b"")

    def namespaces(self, verb: str) -> list[str]:
        return [c[3] for c in self.calls if c[1:3] == ["netns", verb]]


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities.os, "geteuid", lambda: 0)
    monkeypatch.setattr(capabilities.shutil, "which", lambda t: f"/usr/bin/{t}")


@pytest.mark.parametrize(
    "fail,raise_on,want",
    [
        (None, None, True),  # both routes added
        ("seg6", None, False),  # encap seg6 refused
        ("seg6local", None, False),  # seg6local refused
        ("veth", None, False),  # no namespace to probe in: not assumed
        (None, "seg6local", False),  # ip hangs: no, and still cleaned up
    ],
)
def test_the_probe_decides_and_always_deletes_its_namespace(
    monkeypatch: pytest.MonkeyPatch, as_root: None, fail: str | None, raise_on: str | None, want
) -> None:
    fake = FakeIp(fail, raise_on)
    monkeypatch.setattr(capabilities.subprocess, "run", fake)
    assert capabilities.srv6() is want
    added = fake.namespaces("add")
    assert len(added) == 1 and added[0].startswith(capabilities.SRV6_NETNS_PREFIX)
    assert str(capabilities.os.getpid()) in added[0]
    assert fake.namespaces("delete") == added  # deleted, whatever happened
    probes = [c for c in fake.calls if "encap" in c]
    assert all(c[1:3] == ["-n", added[0]] for c in probes)  # only inside its namespace
    if want:
        kinds = {c[c.index("encap") + 1] for c in probes}
        assert kinds == {"seg6", "seg6local"}
    # cached: asking again probes nothing
    n = len(fake.calls)
    assert capabilities.srv6() is want and len(fake.calls) == n


def test_a_namespace_it_could_not_create_is_not_deleted(
    monkeypatch: pytest.MonkeyPatch, as_root: None
) -> None:
    fake = FakeIp(fail="add")
    monkeypatch.setattr(capabilities.subprocess, "run", fake)
    assert capabilities.srv6() is False
    assert fake.namespaces("delete") == []  # it may be someone else's


def test_probes_get_fresh_names(monkeypatch: pytest.MonkeyPatch, as_root: None) -> None:
    fake = FakeIp()
    monkeypatch.setattr(capabilities.subprocess, "run", fake)
    capabilities._srv6_probe()
    capabilities._srv6_probe()
    a, b = fake.namespaces("add")
    assert a != b


@pytest.mark.parametrize(
    "line,want",
    [("CONFIG_IPV6_SEG6_LWTUNNEL=y", True), ("# CONFIG_IPV6_SEG6_LWTUNNEL is not set", False)],
)
def test_without_root_the_kernel_config_decides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, line: str, want: bool
) -> None:
    monkeypatch.setattr(capabilities.os, "geteuid", lambda: 1000)
    config = tmp_path / "config.gz"
    config.write_bytes(gzip.compress(f"CONFIG_IPV6=y\n{line}\nCONFIG_X=m\n".encode()))
    real_path = capabilities.Path
    monkeypatch.setattr(
        capabilities,
        "Path",
        lambda p: config if p == "/proc/config.gz" else real_path(tmp_path / "absent"),
    )

    def no_probe(*a: object, **k: object) -> None:
        raise AssertionError("probed without root")

    monkeypatch.setattr(capabilities.subprocess, "run", no_probe)
    assert capabilities.srv6() is want
    capabilities._srv6_cached.cache_clear()
    config.unlink()  # unreadable: not assumed
    assert capabilities.srv6() is False


def test_require_srv6_names_the_kernel_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "srv6", lambda: True)
    capabilities.require_srv6()
    monkeypatch.setattr(capabilities, "srv6", lambda: False)
    with pytest.raises(CapabilityError) as exc:
        capabilities.require_srv6()
    assert exc.value.message.startswith("this kernel has no SRv6 (CONFIG_IPV6_SEG6_LWTUNNEL)")
    assert "CONFIG_IPV6_SEG6_LWTUNNEL=y" in (exc.value.hint or "")
