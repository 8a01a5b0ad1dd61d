"""Detect what this machine can do, rather than assume it.

Each check is cheap and cached. Missing tools are reported with the Debian package that
provides them; missing kernel features with what polynimbus does instead.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import shutil
import subprocess
import threading
from pathlib import Path

from polynimbus.errors import CapabilityError

TOOL_PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "wg": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "nebula": "nebula",
    "nebula-cert": "nebula",
    "openvpn": "openvpn",
    "fping": "fping",
    "ping": "iputils-ping",
    "iperf3": "iperf3",
    "tcpdump": "tcpdump",
    "sysctl": "procps",
    "tc": "iproute2",
    "setsid": "util-linux",
    "unshare": "util-linux",
    "charon-systemd": "charon-systemd",
    "swanctl": "strongswan-swanctl",
}
"""Command -> Debian package that provides it."""


def require_root(what: str) -> None:
    """Raise unless running as root.

    Raises:
        CapabilityError: not root.
    """
    if os.geteuid() != 0:
        raise CapabilityError(
            f"{what} needs root (it creates network namespaces); run it with sudo", None
        )


def missing_tools(tools: list[str]) -> list[str]:
    """The commands of ``tools`` not found on PATH."""
    return [t for t in tools if shutil.which(t) is None]


def require_tools(tools: list[str]) -> None:
    """Raise if any of ``tools`` is missing, naming the Debian packages to install.

    Raises:
        CapabilityError: with ``apt-get install`` of the missing packages as the hint.
    """
    missing = missing_tools(tools)
    if missing:
        pkgs = sorted({TOOL_PACKAGES.get(t, t) for t in missing})
        names = ", ".join(f"{t} (Debian package {TOOL_PACKAGES.get(t, t)})" for t in missing)
        raise CapabilityError(
            f"missing tool{'s' if len(missing) > 1 else ''}: {names}",
            f"apt-get install {' '.join(pkgs)}  (or run: make deps)",
        )


def _module_available(name: str) -> bool:
    if Path(f"/sys/module/{name}").exists():
        return True
    if shutil.which("modprobe"):
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(["modprobe", "-q", name], capture_output=True, check=False, timeout=10)
        return Path(f"/sys/module/{name}").exists()
    return False


@functools.cache
def kernel_wireguard() -> bool:
    """True when the kernel has WireGuard (module loaded, loadable or built in).

    ``POLYNIMBUS_WIREGUARD=userspace`` forces ``wireguard-go``; ``=kernel`` forces the module.
    """
    forced = os.environ.get("POLYNIMBUS_WIREGUARD", "").lower()
    if forced in ("userspace", "kernel"):
        return forced == "kernel"
    return _module_available("wireguard")


ESP_PROBE = (
    "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
    "spi", "0x100", "mode", "tunnel", "aead", "rfc4106(gcm(aes))",
    "0x" + "00" * 20, "128",
)  # fmt: skip
"""An ESP state with AES-GCM (RFC 4106), added in a throwaway network namespace to learn
whether the kernel does ESP; a kernel without it answers "Requested type not found"."""


@functools.cache
def kernel_esp() -> bool:
    """True when the kernel does IPsec ESP with AES-GCM (XFRM, ``esp4``, ``rfc4106``).

    Probed by adding :data:`ESP_PROBE` in a new, empty network namespace (``unshare
    --net``, which vanishes with the command: nothing on the host changes); without root,
    by whether the ``esp4`` module is loaded or loadable. ``POLYNIMBUS_IPSEC=libipsec``
    forces strongSwan's user-space ESP, ``=kernel`` the kernel's.
    """
    forced = os.environ.get("POLYNIMBUS_IPSEC", "").lower()
    if forced in ("libipsec", "kernel"):
        return forced == "kernel"
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return _module_available("esp4")
    try:
        res = subprocess.run(
            ["unshare", "--net", *ESP_PROBE], capture_output=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def ipsec_impl() -> str:
    """``kernel`` (kernel ESP) or ``libipsec`` (strongSwan's user-space ESP over TUN)."""
    return "kernel" if kernel_esp() else "libipsec"


CAP_SYS_PTRACE = 19
"""Bit of ``CAP_SYS_PTRACE`` in ``/proc/self/status`` ``CapEff``."""


@functools.cache
def take_fds() -> bool:
    """True when this process may take a copy of another process's file descriptors
    (``pidfd_getfd(2)``: Linux >= 5.6, and Yama's ``ptrace_scope`` 0, or 1-2 with
    ``CAP_SYS_PTRACE``; 3 forbids it). The lab uses it to size ``wireguard-go``'s sockets.
    """
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    if (major, minor) < (5, 6):
        return False
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        scope = 0  # no Yama: root may
    if scope == 0:
        return os.geteuid() == 0
    if scope == 3:
        return False
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(
            next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16
        )
    except (OSError, StopIteration, ValueError):
        return False
    return bool(cap_eff >> CAP_SYS_PTRACE & 1)


SRV6_CONFIG = "CONFIG_IPV6_SEG6_LWTUNNEL"
"""The kernel option of SRv6 lightweight tunnels: ``encap seg6`` (RFC 8754 encapsulation)
and ``encap seg6local`` (the endpoint behaviours of RFC 8986, End, End.DX4, End.DX6...)."""

SRV6_PROBES: tuple[tuple[str, ...], ...] = (
    ("-6", "route", "add", "fc00:1::/64", "encap", "seg6", "mode", "encap",
     "segs", "fc00::2", "dev", "v0"),
    ("-6", "route", "add", "fc00:2::1/128", "encap", "seg6local", "action", "End",
     "dev", "v0"),
)  # fmt: skip
"""The two routes the SRv6 probe adds in its throwaway namespace; a kernel without
:data:`SRV6_CONFIG` answers "lwt encapsulation type not supported" (EOPNOTSUPP)."""

SRV6_NETNS_PREFIX = "pn-cap-srv6-"
"""The probe's namespace: this prefix, the process id and a counter (never a lab's
``pn.`` name)."""

_srv6_lock = threading.Lock()
_srv6_probes = 0


def _srv6_probe() -> bool:
    """Add :data:`SRV6_PROBES` on one end of a veth pair in a new network namespace of this
    process's own (a dummy interface would need a module this kernel may lack), then delete
    the namespace, whatever happened. Needs root and ``ip``."""
    global _srv6_probes
    _srv6_probes += 1
    ns = f"{SRV6_NETNS_PREFIX}{os.getpid()}-{_srv6_probes}"

    def ip(*args: str) -> bool:
        res = subprocess.run(["ip", *args], capture_output=True, check=False, timeout=10)
        return res.returncode == 0

    created = False
    try:
        created = ip("netns", "add", ns)
        steps = [
            ("link", "add", "v0", "type", "veth", "peer", "name", "v1"),
            ("link", "set", "v0", "up"),
            *SRV6_PROBES,
        ]
        return created and all(ip("-n", ns, *step) for step in steps)
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        if created:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                ip("netns", "delete", ns)


def _kernel_config(option: str) -> bool | None:
    """Whether the running kernel's configuration sets ``option`` (``=y`` or ``=m``), from
    ``/proc/config.gz`` or ``/boot/config-RELEASE``; ``None`` when neither can be read."""
    sources = [
        (Path("/proc/config.gz"), True),
        (Path(f"/boot/config-{os.uname().release}"), False),
    ]
    for path, zipped in sources:
        try:
            raw = gzip.decompress(path.read_bytes()) if zipped else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        text = raw.decode(errors="replace")
        return any(ln in (f"{option}=y", f"{option}=m") for ln in text.splitlines())
    return None


@functools.cache
def _srv6_cached() -> bool:
    if os.geteuid() == 0 and shutil.which("ip") is not None:
        return _srv6_probe()
    return bool(_kernel_config(SRV6_CONFIG))


def srv6() -> bool:
    """True when the kernel can install SRv6 routes: ``encap seg6`` (RFC 8754) and
    ``encap seg6local`` (RFC 8986 behaviours), i.e. Linux was built with
    ``CONFIG_IPV6_SEG6_LWTUNNEL=y``. Service chains and ``overlay.srv6`` need it.

    As root, probed for real (:func:`_srv6_probe`: :data:`SRV6_PROBES` in a throwaway
    namespace ``pn-cap-srv6-PID-N``, always deleted), since ``/proc/config.gz`` is not
    always there; without root, read from the kernel's configuration (False when it cannot
    be read). Cached for the process; never raises.
    """
    with _srv6_lock:  # one probe, even when threads (the API server) ask at once
        return _srv6_cached()


def require_srv6() -> None:
    """Raise unless the kernel has SRv6 (:func:`srv6`).

    Raises:
        CapabilityError: no ``CONFIG_IPV6_SEG6_LWTUNNEL``; the hint names the kernel option.
    """
    if not srv6():
        raise CapabilityError(
            f"this kernel has no SRv6 ({SRV6_CONFIG}): service chains and SRv6 cannot be "
            "built here",
            f"use a kernel built with {SRV6_CONFIG}=y (Debian's has it), or remove "
            "services, chains and overlay.srv6 from the intent",
        )


@functools.cache
def netem() -> bool:
    """True when the kernel has the netem qdisc (delay emulation)."""
    return _module_available("sch_netem")


def wireguard_impl() -> str:
    """``kernel`` or ``userspace``."""
    return "kernel" if kernel_wireguard() else "userspace"
