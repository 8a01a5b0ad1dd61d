"""Kernel parameters of lab nodes, read and written through ``/proc/sys`` from a thread
that has entered the node's namespace (no subprocess)."""

from __future__ import annotations

from collections.abc import Sequence

from polynimbus.errors import ApplyError
from polynimbus.node import Sysctl
from polynimbus.resources import Key, Resource
from polynimbus.targets.lab import netns


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def observe(ns: str, wanted: Sequence[Sysctl], out: dict[Key, Resource]) -> None:
    """Read the sysctls of ``wanted`` in ``ns`` into ``out`` (missing keys are skipped)."""

    def read() -> dict[str, str]:
        values = {}
        for s in wanted:
            try:
                with open(_path(s.key)) as f:
                    values[s.key] = f.read().strip()
            except OSError:
                continue
        return values

    for key, value in netns.in_netns(ns, read).items():
        r = Resource(ns, Sysctl(key, value))
        out[r.key] = r


def create(ns: str, item: Sysctl) -> None:
    """Set ``item`` in ``ns``.

    Raises:
        ApplyError: the kernel refused or the key does not exist.
    """

    def write() -> None:
        with open(_path(item.key), "w") as f:
            f.write(item.value)

    try:
        netns.in_netns(ns, write)
    except OSError as exc:
        raise ApplyError(f"cannot set {item.key}={item.value} in {ns}: {exc.strerror}") from None
