"""kill -9 of ``polynimbus up`` at 6 seeded random points, each after partial state exists:
every time a re-run of up completes the lab and down then leaves nothing (no namespace,
process, socket, interface, lock or state). Three more kills are followed by down alone.
(The suite's 15-minute budget: 20 + 10 kills until issue 8, 12 + 6 until issue 9.)

The points are drawn from the moment the state directory is marked, so kills during key
writing and namespace creation are included as well as late ones."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from polynimbus import names, state
from polynimbus.intent import load_intent_text
from polynimbus.plan import build_plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify.reachability import ping_all
from tests.integration.conftest import leftovers
from tests.integration.test_cli import POLYNIMBUS, REPO, base_env, ok, pn, six_sites

NAME = "cli-kill"
KILLS = 6
SEED = 20240510


def all_leftovers(lab: str, sdir: Path) -> list[str]:
    """``leftovers`` plus the lab's WireGuard interfaces in the host's namespace and a
    lock still held."""
    left = leftovers(lab, sdir)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    prefix = names.wireguard_if_prefix(lab)
    left += [ln for ln in links.splitlines() if f": {prefix}" in ln]
    if state.is_locked(lab):
        left.append(f"lock {state.lock_path(lab)} held")
    for lock in (state.lock_path(lab), state.lock_dir() / f"tag.{names.lab_tag(lab)}.lock"):
        if lock.exists():
            left.append(f"lock file {lock}")
    if state.recorded_state_dir(lab) is not None:
        left.append(f"registry entry of {lab}")
    return left


def start_up(path: Path, sdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(POLYNIMBUS), "up", str(path), "--state-dir", str(sdir), "-v"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=base_env(),
        cwd=REPO,
    )


def wait_partial_state(proc: subprocess.Popen[bytes], sdir: Path, timeout: float = 30) -> float:
    """Poll until up has marked its state directory (its first write); the time
    (monotonic)."""
    end = time.monotonic() + timeout
    marker = sdir / state.MARKER
    while time.monotonic() < end:
        if marker.exists():
            return time.monotonic()
        assert proc.poll() is None, f"up exited {proc.returncode} before marking {sdir}"
        time.sleep(0.001)
    raise AssertionError(f"up did not mark {sdir}")


def calibrate(path: Path, sdir: Path, n_ns: int) -> float:
    """How long a whole up lasts from its first write on, s (then down)."""
    proc = start_up(path, sdir)
    first = wait_partial_state(proc, sdir)
    assert proc.wait(timeout=120) == 0
    span = time.monotonic() - first
    assert len(list_lab_namespaces(NAME)) == n_ns
    ok(pn("down", path, "--state-dir", sdir))
    assert all_leftovers(NAME, sdir) == []
    return span


def kill_runs(lab, seed: int, kills: int, rerun: bool) -> None:  # type: ignore[no-untyped-def]
    """``kills`` times: start up, SIGKILL it a seeded random time after its first write
    (while it runs, with partial state: asserted), then (``rerun``) run up again, which must
    complete and reach every pair, then down, which must leave nothing."""
    text = six_sites(NAME)
    path = lab.write(text)
    sdir = lab.state(NAME)
    plan = build_plan(load_intent_text(text))
    n_ns = 1 + len(plan.sites) + sum(len(s.hosts) for s in plan.sites)
    span = calibrate(path, sdir, n_ns)

    rng = random.Random(seed)
    killed, attempts = 0, 0
    while killed < kills:
        attempts += 1
        assert attempts <= 2 * kills, f"only {killed} of {attempts - 1} ups were caught mid-way"
        delay = rng.uniform(0.0, span)
        proc = start_up(path, sdir)
        try:
            first = wait_partial_state(proc, sdir)
            while time.monotonic() < first + delay:
                time.sleep(0.001)
            present = list_lab_namespaces(NAME)
            keys = sorted(p.name for p in (sdir / "keys").glob("*.key"))
            proc.send_signal(signal.SIGKILL)  # a no-op if it has been reaped already
        finally:
            proc.wait()
        if proc.returncode != -signal.SIGKILL:  # it ended before the kill: draw again
            ok(pn("down", path, "--state-dir", sdir))
            continue
        assert proc.returncode == -signal.SIGKILL
        assert (sdir / state.MARKER).exists()  # partial state exists (asserted)
        killed += 1
        where = (
            f"kill #{killed} at {delay:.3f} s of {span:.3f} s "
            f"({len(keys)} keys, {len(present)} namespaces)"
        )
        if rerun:
            res = pn("up", path, "--state-dir", sdir)
            assert res.returncode == 0, f"{where}: re-run of up failed:\n{res.stderr}"
            assert len(list_lab_namespaces(NAME)) == n_ns, where
            bad = [p for p in ping_all(plan) if not p.reachable]
            assert bad == [], f"{where}: {bad}"
            assert "no changes" in ok(pn("up", path, "--state-dir", sdir)).stdout, where
        ok(pn("down", path, "--state-dir", sdir))
        left = all_leftovers(NAME, sdir)
        assert left == [], f"{where}: {left}"


def test_kill_then_rerun_completes_and_down_leaves_nothing(lab) -> None:
    """6 kills: each time a re-run of up completes the lab (every pair reaches, a further
    up changes nothing), then down leaves nothing."""
    kill_runs(lab, SEED + 1, KILLS, rerun=True)


def test_kill_then_down_leaves_nothing(lab) -> None:
    """3 more kills: down right after the kill removes the half-built lab."""
    kill_runs(lab, SEED, KILLS // 2, rerun=False)
