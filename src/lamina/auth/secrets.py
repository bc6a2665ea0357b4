"""Secret keys at rest: IAM user secrets and STS session secrets, sealed with AES-GCM.

lamina has to give a secret back in plain text to verify signatures with it (SigV4 is an HMAC
keyed by the secret), so a one-way hash will not do: the secrets are encrypted. The choice:

* **Cipher**: AES-256-GCM (`cryptography`), a fresh 96-bit random nonce per secret. The row's
  own id (the access key id) is the associated data, so a sealed secret copied onto another
  row does not open.
* **Master key**: 32 bytes that live *outside* the data dir, so that a copy of the data dir
  (a backup, a tarball, a volume snapshot) alone reveals no secret. It comes from
  `LAMINA_MASTER_KEY` (base64 of 32 bytes) when set — the way to run several nodes on one
  database, or to keep the key in a secret manager — else from the file
  `$XDG_CONFIG_HOME/lamina/master-<sha256(absolute data dir)[:16]>.key` (`~/.config` when
  `XDG_CONFIG_HOME` is unset), created with mode 0600 (directory 0700) on first use. One key
  per data dir, so two lamina data dirs on one machine do not share a key.
* **Losing the master key** loses the sealed secrets (IAM user keys must be made again); the
  root credentials are not sealed here (see `lamina.credentials`).

Neither the key nor any plaintext ever appears in a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets as _random
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASTER_KEY_ENV = "LAMINA_MASTER_KEY"
_NONCE = 12
_VERSION = b"\x01"  # format byte, so the scheme can change without guessing


class SecretError(Exception):
    """A sealed secret does not open (wrong master key, or the row was tampered with)."""


class SecretBox:
    """Seals and opens short secrets under one master key."""

    __slots__ = ("_aead", "_load", "source")

    def __init__(
        self, key: bytes | None, source: str = "given", load: Callable[[], bytes] | None = None
    ) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(key) if key is not None else None
        self._load = load  # reads (or makes) the key on first use, when `key` is None
        self.source = source  # where the key came from (for a log line; never the key)

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            assert self._load is not None
            self._aead = AESGCM(self._load())
        return self._aead

    def __repr__(self) -> str:
        return f"SecretBox(source={self.source!r})"

    @classmethod
    def generate(cls) -> SecretBox:
        """A box under a fresh random key (tests, throwaway stores)."""
        return cls(AESGCM.generate_key(256), "random")

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        """The box for the data dir: `LAMINA_MASTER_KEY`, else the key file — read, or made,
        when a secret is first sealed or opened (a lamina that never stores one writes none)."""
        env = os.environ.get(MASTER_KEY_ENV)
        if env:
            try:
                key = base64.b64decode(env.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise SystemExit(f"lamina: {MASTER_KEY_ENV} is not valid base64") from None
            if len(key) != 32:
                raise SystemExit(f"lamina: {MASTER_KEY_ENV} must be 32 bytes, base64-encoded")
            return cls(key, MASTER_KEY_ENV)
        path = master_key_path(data_dir)
        return cls(None, str(path), lambda: _load_or_create_key(path))

    def seal(self, plaintext: str, bound_to: str) -> bytes:
        """Encrypt `plaintext`; it opens only with the same `bound_to` (the row's id)."""
        nonce = _random.token_bytes(_NONCE)
        sealed = self._cipher().encrypt(nonce, plaintext.encode(), bound_to.encode())
        return _VERSION + nonce + sealed

    def open(self, blob: bytes, bound_to: str) -> str:
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
            raise SecretError("not a sealed secret")
        nonce, sealed = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        try:
            return self._cipher().decrypt(nonce, sealed, bound_to.encode()).decode()
        except InvalidTag:
            raise SecretError(f"the secret of {bound_to} does not open with this key") from None


def master_key_path(data_dir: Path) -> Path:
    """Where the master key of `data_dir` is kept when `LAMINA_MASTER_KEY` is not set."""
    digest = hashlib.sha256(str(data_dir.expanduser().resolve()).encode()).hexdigest()[:16]
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "lamina" / f"master-{digest}.key"


def _load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        encoded = base64.b64encode(AESGCM.generate_key(256))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # made by a concurrent start: read theirs
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(encoded + b"\n")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SystemExit(f"lamina: the master key file {path} is damaged") from None
    if len(key) != 32:
        raise SystemExit(f"lamina: the master key file {path} is damaged")
    return key
