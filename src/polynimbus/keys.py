"""WireGuard keys: X25519 key pairs kept in the lab's state directory.

Generated with the ``cryptography`` library. Private keys are files of mode 0600 (from their
first byte: ``write_private_file``) in a 0700 directory, never printed; later runs reuse them;
``rotate`` replaces them (seed 003 §3.2.4.2: keys differ per gateway and are generated before
configuration). A key file or keys directory that is a symbolic link, has another mode or
owner, or a corrupt key, is refused with a ``KeyFileError`` and never silently replaced.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from polynimbus.errors import KeyFileError


@dataclass(frozen=True)
class KeyPair:
    """A WireGuard key pair as base64 text (44 characters each)."""

    private: str
    public: str

    def __repr__(self) -> str:  # never show the private key
        return f"KeyPair(public={self.public!r})"


def generate() -> KeyPair:
    """A fresh X25519 key pair."""
    return from_private(X25519PrivateKey.generate())


def from_private(key: X25519PrivateKey) -> KeyPair:
    """The key pair of ``key``."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(base64.b64encode(raw).decode(), base64.b64encode(pub).decode())


def from_private_text(text: str) -> KeyPair:
    """The key pair of a base64 private key.

    Raises:
        ValueError: not a 32-byte base64 key.
    """
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard private key is 32 bytes")
    return from_private(X25519PrivateKey.from_private_bytes(raw))


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only.

    A temporary file with a random name in the same directory is created with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600 before its first byte, written, fsynced,
    renamed over ``path`` (replacing a file or symbolic link there, never writing through
    one), then the directory is fsynced. On failure the temporary file is removed and
    ``path`` is unchanged.

    Raises:
        OSError: the directory is missing or not writable, ``path`` is a directory, etc.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask: 0600 before the first byte
            data = text.encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


_ROTATE_HINT = "run 'polynimbus up --rotate-keys' to replace every key of the lab"


def _check_dir(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(
            f"the keys directory {path} is not a directory (a symbolic link or a file)",
            f"remove {path}; polynimbus creates it again (with new keys)",
            path=str(path),
        )
    if st.st_uid != os.geteuid():
        raise KeyFileError(
            f"the keys directory {path} belongs to uid {st.st_uid}, not to you "
            f"(uid {os.geteuid()})",
            f"remove {path}; polynimbus creates it again (with new keys)",
            path=str(path),
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise KeyFileError(
            f"the keys directory {path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700",
            f"chmod 700 {path}",
            path=str(path),
        )


def read_key_file(path: Path) -> KeyPair:
    """The key pair of the private key stored at ``path``, after checking the file.

    Raises:
        KeyFileError: ``path`` is a symbolic link or not a regular file, is not owned by the
            current user, has a mode other than 0600, or does not hold a base64 32-byte key.
        FileNotFoundError: there is no such file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(
                f"the key file {path} is a symbolic link; polynimbus does not follow it",
                f"delete it, or {_ROTATE_HINT}",
                path=str(path),
            ) from None
        raise KeyFileError(
            f"cannot read the key file {path}: {exc.strerror}", _ROTATE_HINT, path=str(path)
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(
                f"the key file {path} is not a regular file",
                f"remove it, or {_ROTATE_HINT}",
                path=str(path),
            )
        if st.st_uid != os.geteuid():
            raise KeyFileError(
                f"the key file {path} belongs to uid {st.st_uid}, not to you "
                f"(uid {os.geteuid()}); polynimbus does not use it",
                f"delete it, or {_ROTATE_HINT}",
                path=str(path),
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode != 0o600:
            raise KeyFileError(
                f"the key file {path} has mode {mode:04o}, not 0600: the private key may "
                "have been readable by others",
                f"chmod 600 {path} if it never was, else {_ROTATE_HINT}",
                path=str(path),
            )
        data = f.read(256)
    try:
        return from_private_text(data.decode("ascii"))
    except (ValueError, binascii.Error) as exc:
        raise KeyFileError(
            f"the key file {path} is corrupt ({exc})",
            f"delete it, or {_ROTATE_HINT}",
            path=str(path),
        ) from None


class KeyStore:
    """Key pairs by site name under ``STATE_DIR/keys/SITE.key`` (mode 0600, directory 0700).

    ``STATE_DIR`` is a directory prepared by ``state.prepare``.
    """

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "keys"

    def path(self, site: str) -> Path:
        """The key file of ``site``."""
        return self.dir / f"{site}.key"

    def _dir_stat(self) -> os.stat_result | None:
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return None
        _check_dir(self.dir, st)
        return st

    def load(self, sites: list[str]) -> dict[str, KeyPair | None]:
        """The stored key of every site, ``None`` where there is none yet. Read-only: creates
        and changes nothing (for ``up --dry-run``).

        Raises:
            KeyFileError: the keys directory or a key file is unsafe or corrupt.
        """
        out: dict[str, KeyPair | None] = dict.fromkeys(sites)
        if self._dir_stat() is None:
            return out
        for site in sites:
            with contextlib.suppress(FileNotFoundError):
                out[site] = read_key_file(self.path(site))
        return out

    def ensure(self, sites: list[str], rotate: bool = False) -> dict[str, KeyPair]:
        """Load the key of every site, creating missing ones (all of them if ``rotate``).

        Creates the keys directory (0700) when missing; new keys are written with
        ``write_private_file``; the keys of sites not in ``sites`` are removed. With
        ``rotate``, existing key files are replaced without being read (so a refused or
        corrupt key file is replaced too).

        Raises:
            KeyFileError: the keys directory or a stored key file is unsafe (symbolic link,
                wrong mode or owner) or corrupt (not with ``rotate`` for key files), or a
                key cannot be written.
            FileNotFoundError: ``state_dir`` does not exist (call ``state.prepare`` first).
        """
        if self._dir_stat() is None:
            try:
                os.mkdir(self.dir, 0o700)
            except FileExistsError:  # appeared meanwhile
                pass
            else:  # ours, just made: undo whatever the umask took away
                fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    os.fchmod(fd, 0o700)
                finally:
                    os.close(fd)
            _check_dir(self.dir, os.lstat(self.dir))
        out: dict[str, KeyPair] = {}
        for site in sites:
            path = self.path(site)
            if not rotate:
                try:
                    out[site] = read_key_file(path)
                    continue
                except FileNotFoundError:
                    pass
            pair = generate()
            try:
                write_private_file(path, pair.private + "\n")
            except OSError as exc:
                raise KeyFileError(
                    f"cannot write the key file {path}: {exc.strerror}",
                    f"remove whatever is at {path}",
                    path=str(path),
                ) from None
            out[site] = pair
        wanted = {f"{s}.key" for s in sites}
        for entry in os.scandir(self.dir):  # a site that left the lab keeps no key here
            if (
                entry.name.endswith(".key")
                and entry.name not in wanted
                and entry.is_file(follow_symlinks=False)
            ):
                os.unlink(entry.path)
        return out
