"""Long-running processes of the lab's nodes (tunnel daemons such as ``wireguard-go``,
``openvpn``, and the programs of ``command`` network functions).

A process belongs to a node when it runs in the node's namespace. It is started detached
(``setsid -f``) so it outlives ``polynimbus`` and init reaps it; it is found again through
``/proc`` by its namespace and command line. Its name follows the node model's convention
``BASENAME:LASTARG`` (e.g. ``wireguard-go:wg1a2b010000``).

A command line may start with environment assignments, ``NAME=value`` words as env(1)
takes them (``STRONGSWAN_CONF=x.conf charon-systemd x``): they go into the program's
environment, the rest is run; the process is named after the program
(``charon-systemd:x``), and observe gives it the wanted command line back when its
environment (``/proc/PID/environ``) still holds those assignments.

A process with files runs in a directory of its own, ``STATE_DIR/daemons/NODE.NAME``
(0700; files 0600 from the first byte; removed with the process, :func:`prune_files`),
and carries its digest in its environment (:data:`DIGEST_ENV`), which observe reads back
from ``/proc/PID/environ``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from polynimbus import procs
from polynimbus.errors import ApplyError
from polynimbus.events import STATE_DIR_ENV
from polynimbus.keys import write_private_file
from polynimbus.node import Process
from polynimbus.resources import Key, Resource
from polynimbus.tunnels import TRANSPORTS

DAEMONS = frozenset({"wireguard-go", "keepalived"}).union(
    *(TRANSPORTS.get(n).daemons for n in TRANSPORTS.names())
)
"""Commands the lab starts as node processes (every transport's daemons, and keepalived
for the sites with two gateways: :mod:`polynimbus.render.standby`); others in a
namespace are not ours."""
MODULE_DAEMONS = frozenset({"polynimbus.agent.failover"})
"""Python modules the lab runs as node processes. The node model writes them
``python3 -m MODULE ...`` (the same on every machine); the lab starts them with the Python
running polynimbus (:data:`sys.executable`, where polynimbus is installed) and reads them
back as ``python3 ...`` (:func:`normal_argv`)."""
PYTHON = "python3"


def is_daemon(argv: tuple[str, ...] | list[str]) -> bool:
    """Whether ``argv`` is one of the daemons the lab starts (:data:`DAEMONS`,
    :data:`MODULE_DAEMONS`)."""
    if not argv:
        return False
    if os.path.basename(argv[0]) in DAEMONS:
        return True
    return _is_module_daemon(argv)


def _is_module_daemon(argv: tuple[str, ...] | list[str]) -> bool:
    return (
        len(argv) > 2
        and os.path.basename(argv[0]).startswith("python")
        and argv[1] == "-m"
        and argv[2] in MODULE_DAEMONS
    )


def normal_argv(argv: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``argv`` as the node model writes it: a module daemon's interpreter is ``python3``."""
    if _is_module_daemon(argv):
        return (PYTHON, *argv[1:])
    return tuple(argv)


def launch_argv(command: tuple[str, ...]) -> tuple[str, ...]:
    """The command line to start for the node model's ``command``: a module daemon runs
    with this Python."""
    if _is_module_daemon(command):
        return (sys.executable, *command[1:])
    return command


START_TIMEOUT_S = 5.0
DIGEST_ENV = "POLYNIMBUS_DIGEST"
"""Environment variable holding the digest a process was started with."""


def files_dir(state_dir: Path, ns: str, name: str) -> Path:
    """Where the files of process ``name`` of node ``ns`` are written, and where it runs:
    ``STATE_DIR/daemons/NS.NAME`` (``:`` and ``/`` of the name made ``-`` and ``_``), one
    directory per process, so that a process's files go with it (:func:`prune_files`)."""
    return state_dir / "daemons" / f"{ns}.{name.replace(':', '-').replace('/', '_')}"


def prune_files(
    state_dir: Path,
    lab_prefix: str,
    desired: Iterable[Resource],
    nodes: set[str] | None = None,
) -> list[str]:
    """Remove the file directories of the lab's processes that ``desired`` no longer has
    (their configuration and keys: a removed tunnel leaves no secret behind); regular
    files and sockets in them, then the directory. Returns the directories removed.
    Only directories named for the lab's nodes (``lab_prefix``; of ``nodes`` only, when
    given) are looked at."""
    base = state_dir / "daemons"
    wanted = {
        files_dir(state_dir, r.node, r.item.name).name
        for r in desired
        if isinstance(r.item, Process) and r.item.files
    }
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return removed
    for e in entries:
        if not e.name.startswith(lab_prefix) or e.name in wanted:
            continue
        if nodes is not None and not any(e.name.startswith(f"{n}.") for n in nodes):
            continue  # a scoped apply: not read, not judged
        if not e.is_dir(follow_symlinks=False):
            continue
        for f in os.scandir(e.path):
            mode = f.stat(follow_symlinks=False).st_mode
            if stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
                os.unlink(f.path)
        with contextlib.suppress(OSError):  # something foreign in it: left
            os.rmdir(e.path)
            removed.append(e.path)
    return removed


def cwd_node(pid: int) -> str | None:
    """The name of the file directory (:func:`files_dir`: ``NS.NAME``) process ``pid`` runs
    in, or ``None``: how a tunnel daemon is recognised as a lab's even outside its
    namespace."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return None
    parent, _, node = cwd.rpartition("/")
    return node if parent.endswith("/daemons") else None


def digest_of(pid: int) -> str:
    """The :data:`DIGEST_ENV` a process was started with, ``""`` if none or unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return ""
    prefix = DIGEST_ENV.encode() + b"="
    for entry in env:
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return ""


def _private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) a directory only its owner can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_files(directory: Path, item: Process) -> None:
    """Write ``item.files`` into ``directory`` (0700), each 0600 from its first byte.

    Raises:
        ApplyError: a name leaves the directory, or a file cannot be written.
    """
    _private_dir(directory.parent)  # STATE_DIR/daemons: lists the lab's nodes
    _private_dir(directory)
    for name, text in item.files:
        path = directory / name
        if path.resolve().parent != directory.resolve():
            raise ApplyError(f"{item.name}: file name {name!r} leaves {directory}")
        try:
            path.unlink(missing_ok=True)  # a fresh inode: never widen an old file
            write_private_file(path, text)
        except OSError as exc:
            raise ApplyError(f"cannot write {path}: {exc.strerror or exc}") from None


_ASSIGNMENT = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*=")


def split_env(argv: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The leading ``NAME=value`` words of ``argv`` (as a mapping) and the command after
    them (the program and its arguments)."""
    env: dict[str, str] = {}
    i = 0
    while i < len(argv) - 1 and _ASSIGNMENT.match(argv[i]):
        name, _, value = argv[i].partition("=")
        env[name] = value
        i += 1
    return env, tuple(argv[i:])


def name_of(argv: tuple[str, ...]) -> str:
    """The node model name of a process with command line ``argv`` (leading environment
    assignments left out)."""
    command = normal_argv(split_env(argv)[1])
    return f"{os.path.basename(command[0])}:{command[-1]}"


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process was started with (empty if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            out[name] = value
    return out


def _wanted_argv(p: procs.Proc, argvs: frozenset[tuple[str, ...]]) -> tuple[str, ...]:
    """``p``'s command line as the node model wants it: one of ``argvs`` with environment
    assignments whose command ``p`` runs, with those assignments in its environment; else
    ``p.argv``."""
    env = None
    for argv in argvs:
        assigned, command = split_env(argv)
        if not assigned or command != tuple(p.argv):
            continue
        env = environ_of(p.pid) if env is None else env
        if all(env.get(k) == v for k, v in assigned.items()):
            return argv
    return normal_argv(p.argv)


def running(
    spaces: Iterable[str], argvs: frozenset[tuple[str, ...]] = frozenset()
) -> dict[str, list[procs.Proc]]:
    """Our processes running in each of ``spaces``, by namespace: the daemons we start
    (:data:`DAEMONS`) and any whose command line is exactly one of ``argvs`` (the
    programs of ``command`` functions, which the node model names)."""
    inodes = {procs.netns_inode(n): n for n in spaces}
    inodes.pop(None, None)
    commands = {split_env(a)[1] for a in argvs}
    out: dict[str, list[procs.Proc]] = {}
    for p in procs.processes():
        ns = inodes.get(p.netns_inode)
        if ns is None or not p.argv:
            continue
        if is_daemon(p.argv) or tuple(p.argv) in commands:
            out.setdefault(ns, []).append(p)
    return out


def observe(
    spaces: list[str], out: dict[Key, Resource], argvs: frozenset[tuple[str, ...]] = frozenset()
) -> dict[str, list[procs.Proc]]:
    """Add the processes running in ``spaces`` to ``out``; return them by namespace.
    ``argvs``: command lines of wanted processes besides :data:`DAEMONS`."""
    found = running(spaces, argvs)
    for ns, plist in found.items():
        for p in plist:
            argv = _wanted_argv(p, argvs)
            r = Resource(ns, Process(name_of(argv), argv, digest=digest_of(p.pid)))
            out[r.key] = r
    return found


def start(ns: str, item: Process, state_dir: Path) -> None:
    """Start ``item`` detached in namespace ``ns`` (stopping an older copy first), with its
    output appended to ``STATE_DIR/run/NAME.log``; its files are written first into
    :func:`files_dir`, where it runs.

    Raises:
        ApplyError: a file cannot be written, ``setsid`` failed or the process died within
            the first moments.
    """
    stop(ns, item)
    log_dir = state_dir / "run"
    _private_dir(log_dir)
    cwd = None
    if item.files:
        cwd = files_dir(state_dir, ns, item.name)
        write_files(cwd, item)
    assigned, command = split_env(item.argv)
    env = dict(os.environ)
    env.pop(DIGEST_ENV, None)
    env.update(assigned)
    if item.digest:
        env[DIGEST_ENV] = item.digest
    env[STATE_DIR_ENV] = str(state_dir)  # where agents append their events
    # named by node too: two gateways may each run a process of the same name
    log = log_dir / f"{ns}.{item.name.replace(':', '-').replace('/', '_')}.log"
    with open(log, "ab") as out:
        try:
            res = subprocess.run(
                ["setsid", "-f", "ip", "netns", "exec", ns, *launch_argv(command)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                check=False,
                timeout=START_TIMEOUT_S,
                cwd=cwd,
                env=env,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ApplyError(
                f"cannot start {' '.join(item.argv)} in {ns}: {exc}", f"see {log}"
            ) from None
    if res.returncode != 0:
        tail = log.read_text(errors="replace")[-300:].strip()
        raise ApplyError(
            f"cannot start {' '.join(item.argv)} in {ns}: setsid exited {res.returncode}"
            + (f": {tail}" if tail else ""),
            f"see {log}",
        )


def wait_for(
    ns: str,
    item_name: str,
    timeout_s: float = START_TIMEOUT_S,
    argvs: frozenset[tuple[str, ...]] = frozenset(),
) -> bool:
    """Wait until a process called ``item_name`` runs in ``ns``; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(name_of(p.argv) == item_name for p in running([ns], argvs).get(ns, [])):
            return True
        time.sleep(0.02)
    return False


def stop(ns: str, item: Process) -> None:
    """Stop the processes called like ``item`` in ``ns`` (absent is fine)."""
    found = running([ns], frozenset({tuple(item.argv)})).get(ns, [])
    pids = [p.pid for p in found if name_of(p.argv) == item.name]
    procs.stop(pids)


def stop_all_in(spaces: list[str]) -> list[procs.Proc]:
    """Stop every process (ours or not) running in ``spaces``; returns them."""
    inodes = {i for i in (procs.netns_inode(n) for n in spaces) if i is not None}
    victims = [p for p in procs.processes() if p.netns_inode in inodes]
    procs.stop([p.pid for p in victims])
    return victims
