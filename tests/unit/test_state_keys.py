"""State directory ownership, the host-wide lab lock, tag collisions and key files."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from polynimbus import errors, keys, names, state
from polynimbus.errors import KeyFileError, PolynimbusError, StateError
from polynimbus.keys import KeyStore, from_private_text

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def tree(path: Path) -> list[str]:
    """Every path under ``path``, relative, sorted (symbolic links not followed)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "locks-base" / "locks"
    monkeypatch.setenv(state.LOCK_DIR_ENV, str(d))
    return d


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------- prepare
def test_prepare_creates_a_private_marked_directory_and_leaves_parents_alone(tmp_path):
    parent = tmp_path / "home"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    sdir = parent / "a" / "lab1"
    with umask(0o277):  # mode 0700 must not depend on the umask
        assert state.prepare(sdir, "lab1") == sdir
    assert mode(sdir) == 0o700
    assert mode(parent) == 0o755
    marker = json.loads((sdir / state.MARKER).read_text())
    assert marker["lab"] == "lab1" and marker["created_dir"] is True
    assert mode(sdir / state.MARKER) == 0o600
    assert mode(sdir / "run") == 0o700
    # again: same lab is fine, another lab is refused
    state.prepare(sdir, "lab1")
    with pytest.raises(StateError, match="holds the state of lab 'lab1'"):
        state.prepare(sdir, "lab2")


def test_foreign_directory_holding_a_file_is_refused_and_untouched(tmp_path):
    foreign = tmp_path / "tmp-like"
    foreign.mkdir()
    os.chmod(foreign, 0o1777)
    f = foreign / "precious.txt"
    f.write_text("mine")
    os.chmod(f, 0o644)
    before = tree(foreign)
    with pytest.raises(StateError) as exc:
        state.prepare(foreign, "lab1")
    assert str(foreign) in exc.value.message and "not created by polynimbus" in exc.value.message
    assert exc.value.hint and "--state-dir" in exc.value.hint
    with pytest.raises(StateError, match="nothing was deleted"):
        state.remove(foreign, "lab1")
    with pytest.raises(StateError):
        state.peek(foreign, "lab1")
    assert tree(foreign) == before
    assert f.read_text() == "mine" and mode(f) == 0o644
    assert mode(foreign) == 0o1777


def test_symlinked_or_non_directory_state_dir_is_refused(tmp_path):
    real = tmp_path / "real"
    state.prepare(real, "lab1")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(StateError, match="symbolic link"):
        state.prepare(link, "lab1")
    with pytest.raises(StateError, match="nothing was deleted"):
        state.remove(link, "lab1")
    assert (real / state.MARKER).exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(StateError):
        state.prepare(afile, "lab1")
    with pytest.raises(StateError):
        state.remove(afile, "lab1")
    assert afile.read_text() == "x"


def test_empty_directory_is_adopted_without_chmod_and_survives_remove(tmp_path):
    sdir = tmp_path / "mine"
    sdir.mkdir()
    os.chmod(sdir, 0o750)
    assert state.peek(sdir, "lab1") == "empty"
    assert tree(sdir) == []  # peek wrote nothing
    state.prepare(sdir, "lab1")
    assert mode(sdir) == 0o750
    assert json.loads((sdir / state.MARKER).read_text())["created_dir"] is False
    KeyStore(sdir).ensure(["a"])
    (sdir / "run" / "wgabcd.log").write_text("log")
    (sdir / "run" / "wgabcd.pid").write_text("1")
    res = state.remove(sdir, "lab1")
    assert sdir.is_dir() and tree(sdir) == [] and mode(sdir) == 0o750
    assert str(sdir) not in res.removed and res.kept == [] and res.warning() is None
    assert str(sdir / "keys" / "a.key") in res.removed


def test_adopting_a_directory_others_can_write_is_refused(tmp_path):
    sdir = tmp_path / "shared"
    sdir.mkdir()
    os.chmod(sdir, 0o777)
    with pytest.raises(StateError, match="mode 0777"):
        state.prepare(sdir, "lab1")
    assert tree(sdir) == [] and mode(sdir) == 0o777


def test_corrupt_marker_is_refused(tmp_path):
    sdir = tmp_path / "s"
    state.prepare(sdir, "lab1")
    (sdir / state.MARKER).write_text("{not json")
    with pytest.raises(StateError, match="corrupt"):
        state.prepare(sdir, "lab1")
    with pytest.raises(StateError, match="corrupt"):
        state.remove(sdir, "lab1")
    assert (sdir / "run").is_dir()


# ---------------------------------------------------------------------------- remove
def test_remove_deletes_what_polynimbus_created(tmp_path):
    sdir = tmp_path / "parent" / "lab1"
    state.prepare(sdir, "lab1")
    KeyStore(sdir).ensure(["a", "b"])
    (sdir / "lock").write_text("")  # written by older versions
    (sdir / "run" / "wgabcd.log").write_text("log")
    res = state.remove(sdir, "lab1")
    # the parent prepare() made goes too; the one that was there stays
    assert not sdir.exists() and not (tmp_path / "parent").exists() and tmp_path.is_dir()
    assert res.removed[-2:] == [str(sdir), str(tmp_path / "parent")] and res.kept == []
    assert state.remove(sdir, "lab1").removed == []  # absent: nothing to do


def test_remove_leaves_a_created_parent_that_others_use_and_parents_that_were_there(tmp_path):
    (tmp_path / "had").mkdir()
    sdir = tmp_path / "had" / "made" / "lab1"
    state.prepare(sdir, "lab1")
    assert state.read_marker(sdir)["created_parents"] == [str(tmp_path / "had" / "made")]
    (tmp_path / "had" / "made" / "other").write_text("someone else's")
    state.remove(sdir, "lab1")
    assert not sdir.exists() and (tmp_path / "had" / "made" / "other").exists()


def test_remove_leaves_foreign_files_and_so_the_directory(tmp_path):
    sdir = tmp_path / "lab1"
    state.prepare(sdir, "lab1")
    KeyStore(sdir).ensure(["a"])
    notes = sdir / "notes.txt"
    notes.write_text("mine")
    outside = tmp_path / "outside.conf"
    outside.write_text("keep")
    (sdir / "run" / "evil.log").symlink_to(outside)
    res = state.remove(sdir, "lab1")
    assert notes.read_text() == "mine" and outside.read_text() == "keep"
    assert set(res.kept) == {str(notes), str(sdir / "run" / "evil.log")}
    assert not (sdir / "keys").exists()
    assert (sdir / state.MARKER).exists()  # still polynimbus's directory
    assert res.warning() and str(notes) in res.warning()
    with pytest.raises(StateError):  # and still only lab1's
        state.remove(sdir, "lab2")
    notes.unlink()
    (sdir / "run" / "evil.log").unlink()
    state.remove(sdir, "lab1")
    assert not sdir.exists()


# ---------------------------------------------------------------------------- lock
def test_lab_lock_is_exclusive_per_lab_whatever_the_state_dir(tmp_path, lock_dir):
    with state.lab_lock("lab1") as path:
        assert path == lock_dir / "lab1.lock"
        assert mode(lock_dir) == 0o700 and mode(path) == 0o600
        assert state.is_locked("lab1") and not state.is_locked("lab2")
        with pytest.raises(StateError) as exc, state.lab_lock("lab1"):
            pass
        assert "lab 'lab1'" in exc.value.message and f"pid {os.getpid()}" in exc.value.message
        with state.lab_lock("lab2"):  # another lab is independent
            pass
        with pytest.raises(StateError, match="working on lab 'lab1'"), state.lab_lock("lab1"):
            state.prepare(tmp_path / "elsewhere", "lab1")  # another state dir: same lock
        assert not (tmp_path / "elsewhere").exists()
    assert not state.is_locked("lab1")
    with state.lab_lock("lab1"):
        pass


def test_lab_lock_held_by_another_process_is_refused(lock_dir):
    code = textwrap.dedent(
        """
        import sys, time
        from polynimbus import state
        with state.lab_lock("lab1"):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(StateError, match=f"pid {child.pid}"), state.lab_lock("lab1"):
            pass
    finally:
        child.communicate("\n", timeout=10)
    with state.lab_lock("lab1"):
        pass


def test_is_locked_creates_nothing_and_unsafe_lock_dir_is_refused(lock_dir):
    assert not state.is_locked("lab1")
    assert not lock_dir.exists()
    lock_dir.mkdir(parents=True)
    os.chmod(lock_dir, 0o777)
    with pytest.raises(StateError, match="lock directory"), state.lab_lock("lab1"):
        pass
    with pytest.raises(StateError, match="invalid lab name"):
        state.lock_path("../etc")


def colliding_names(prefix: str) -> tuple[str, str]:
    """The first two names ``PREFIXi`` whose tags collide (brute force)."""
    seen: dict[str, str] = {}
    i = 0
    while True:
        name = f"{prefix}{i}"
        tag = names.lab_tag(name)
        if tag in seen:
            return seen[tag], name
        seen[tag] = name
        i += 1


def test_tag_collision_between_two_labs_is_refused():
    first, second = colliding_names("lab-")
    with pytest.raises(StateError) as exc:
        state.check_tag_collision(second, ["other", first, second])
    assert repr(first) in exc.value.message and repr(second) in exc.value.message
    assert exc.value.hint and "rename" in exc.value.hint
    state.check_tag_collision(first, [first])  # itself: fine
    state.check_tag_collision(first, [f"{first}x", "other"])  # distinct tags: fine


# ---------------------------------------------------------------------------- keys
def test_key_file_is_0600_from_its_first_byte_and_no_temp_file_remains(tmp_path, monkeypatch):
    real_write = os.write
    seen: list[tuple[int, bool]] = []

    def spy(fd: int, data: bytes) -> int:
        seen.append((stat.S_IMODE(os.fstat(fd).st_mode), (tmp_path / "keys" / "a.key").exists()))
        return real_write(fd, data)

    monkeypatch.setattr(keys.os, "write", spy)
    with umask(0o277):
        pair = KeyStore(tmp_path).ensure(["a"])["a"]
    monkeypatch.undo()
    assert seen and seen[0] == (0o600, False)  # written under a temporary name, 0600 already
    path = tmp_path / "keys" / "a.key"
    assert mode(path) == 0o600 and mode(tmp_path / "keys") == 0o700
    assert os.listdir(tmp_path / "keys") == ["a.key"]
    assert from_private_text(path.read_text()) == pair


def test_failed_key_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys.os, "fsync", fail)
    with pytest.raises(KeyFileError, match="No space left"):
        KeyStore(tmp_path).ensure(["a"])
    assert os.listdir(tmp_path / "keys") == []


def make_key(tmp_path: Path) -> Path:
    KeyStore(tmp_path).ensure(["a"])
    return tmp_path / "keys" / "a.key"


def test_symlinked_key_file_is_refused_and_rotation_replaces_the_link(tmp_path):
    path = make_key(tmp_path)
    target = tmp_path / "elsewhere.key"
    os.replace(path, target)
    path.symlink_to(target)
    for call in (lambda: KeyStore(tmp_path).ensure(["a"]), lambda: KeyStore(tmp_path).load(["a"])):
        with pytest.raises(KeyFileError, match="symbolic link") as exc:
            call()
        assert exc.value.path == str(path) and "--rotate-keys" in (exc.value.hint or "")
    before = target.read_text()
    KeyStore(tmp_path).ensure(["a"], rotate=True)
    assert not path.is_symlink() and mode(path) == 0o600 and target.read_text() == before


def test_key_file_with_wrong_mode_is_refused(tmp_path):
    path = make_key(tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="mode 0644") as exc:
        KeyStore(tmp_path).ensure(["a"])
    assert "chmod 600" in (exc.value.hint or "")
    assert mode(path) == 0o644  # refused, not silently fixed
    rotated = KeyStore(tmp_path).ensure(["a"], rotate=True)
    assert mode(path) == 0o600 and KeyStore(tmp_path).load(["a"])["a"] == rotated["a"]


@ROOT_ONLY
def test_key_file_owned_by_another_user_is_refused(tmp_path):
    path = make_key(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(KeyFileError, match="belongs to uid 65534"):
        KeyStore(tmp_path).load(["a"])


def test_corrupt_key_file_is_a_key_file_error_not_a_traceback(tmp_path):
    path = make_key(tmp_path)
    with open(path, "w") as f:
        f.write("not base64 at all!\n")
    with pytest.raises(KeyFileError, match="corrupt") as exc:
        KeyStore(tmp_path).ensure(["a"])
    assert exc.value.render().startswith(f"error: the key file {path} is corrupt")
    assert exc.value.exit_code == 1
    with open(path, "w") as f:
        f.write("AAAA\n")  # valid base64, wrong length
    with pytest.raises(KeyFileError, match="corrupt"):
        KeyStore(tmp_path).load(["a"])


def test_keys_directory_with_wrong_mode_or_symlink_is_refused(tmp_path):
    make_key(tmp_path)
    os.chmod(tmp_path / "keys", 0o755)
    with pytest.raises(KeyFileError, match="mode 0755"):
        KeyStore(tmp_path).ensure(["a"])
    assert mode(tmp_path / "keys") == 0o755
    other = tmp_path / "other"
    (other / "keys").mkdir(parents=True, mode=0o700)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "keys").symlink_to(other / "keys")
    with pytest.raises(KeyFileError, match="not a directory"):
        KeyStore(tmp_path / "linked").ensure(["a"])
    assert os.listdir(other / "keys") == []


def test_load_is_read_only(tmp_path):
    sdir = tmp_path / "s"
    sdir.mkdir()
    assert KeyStore(sdir).load(["a", "b"]) == {"a": None, "b": None}
    assert tree(sdir) == []
    made = KeyStore(sdir).ensure(["a"])
    before = tree(sdir)
    assert KeyStore(sdir).load(["a", "b"]) == {"a": made["a"], "b": None}
    assert tree(sdir) == before


# ---------------------------------------------------------------------------- errors
def test_every_error_class_has_a_documented_exit_code():
    doc = errors.__doc__ or ""
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, PolynimbusError) and c.__module__ == errors.__name__
    ]
    assert len(classes) >= 9
    for cls in classes:
        assert f"``{cls.__name__}``" in doc, cls.__name__
    assert errors.IntentError.exit_code == 2
    assert all(c.exit_code == 1 for c in classes if c is not errors.IntentError)


def test_lock_files_do_not_outlive_their_command(lock_dir):
    with state.lab_lock("lab1") as path:
        assert path.exists()
    assert not path.exists()
    with state.lab_lock("lab1"):  # and the next command locks a fresh file
        assert state.is_locked("lab1")
    assert list(lock_dir.iterdir()) == []


def test_two_labs_with_one_tag_cannot_hold_the_tag_lock_at_once(lock_dir):
    first, second = colliding_names("t")
    with state.tag_lock(first):
        with pytest.raises(StateError, match="with the tag"), state.tag_lock(second):
            pass
        with state.tag_lock("other-lab-entirely"):  # another tag: no contention
            pass


def test_key_files_are_opened_exclusive_and_without_following_links(tmp_path, monkeypatch):
    """The temporary key file is created with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600."""
    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, **kw):
        if str(path).endswith(".tmp"):
            seen.append((flags, mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    state.prepare(tmp_path / "lab1", "lab1")
    KeyStore(tmp_path / "lab1").ensure(["a"])
    assert seen, "no temporary key file was opened"
    for flags, mode in seen:
        need = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        assert flags & need == need and mode == 0o600


@pytest.mark.parametrize("bad", [None, 3, "x", [1]])
def test_a_marker_with_bad_created_parents_is_refused_before_anything_is_deleted(tmp_path, bad):
    sdir = tmp_path / "lab1"
    state.prepare(sdir, "lab1")
    marker = sdir / state.MARKER
    doc = json.loads(marker.read_text())
    doc["created_parents"] = bad
    marker.write_text(json.dumps(doc))
    with pytest.raises(StateError):
        state.remove(sdir, "lab1")
    assert sdir.is_dir() and marker.exists()


def test_a_site_that_left_the_lab_keeps_no_key(tmp_path):
    from polynimbus.keys import KeyStore

    store = KeyStore(tmp_path)
    kept = store.ensure(["a", "b", "c"])
    assert store.ensure(["a", "b"]) == {"a": kept["a"], "b": kept["b"]}
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["a.key", "b.key"]
