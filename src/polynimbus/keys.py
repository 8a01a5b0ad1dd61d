"""WireGuard keys: X25519 key pairs kept in the lab's state directory.

Generated with the ``cryptography`` library. Private keys are files of mode 0600 in a 0700
directory, never printed; later runs reuse them; ``rotate`` replaces them
(seed 003 §3.2.4.2: keys differ per gateway and are generated before configuration).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


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


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class KeyStore:
    """Key pairs by site name under ``DIR/keys/SITE.key`` (mode 0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "keys"

    def ensure(self, sites: list[str], rotate: bool = False) -> dict[str, KeyPair]:
        """Load the key of every site, creating missing ones (all of them if ``rotate``).

        Raises:
            ValueError: a stored key is corrupt (delete the file or use ``--rotate-keys``).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        out: dict[str, KeyPair] = {}
        for site in sites:
            path = self.dir / f"{site}.key"
            if path.exists() and not rotate:
                try:
                    out[site] = from_private_text(path.read_text())
                except ValueError as exc:
                    raise ValueError(
                        f"the key file {path} is corrupt ({exc}); delete it or run up --rotate-keys"
                    ) from None
                continue
            pair = generate()
            _write_secret(path, pair.private)
            out[site] = pair
        return out
