"""The root credentials: from LAMINA_ACCESS_KEY_ID / LAMINA_SECRET_ACCESS_KEY, else generated on
first start and kept in the data dir (mode 0600). Printed once, when generated."""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from dataclasses import dataclass
from pathlib import Path

_FILE = "credentials.json"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # never print the secret by accident
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


def _generate() -> Credentials:
    alphabet = string.ascii_uppercase + "234567"
    key = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    return Credentials(key, secrets.token_urlsafe(30)[:40])


def load(data_dir: Path) -> Credentials | None:
    env_key = os.environ.get("LAMINA_ACCESS_KEY_ID")
    env_secret = os.environ.get("LAMINA_SECRET_ACCESS_KEY")
    if env_key and env_secret:
        return Credentials(env_key, env_secret)
    path = data_dir / _FILE
    if path.is_file():
        raw = json.loads(path.read_text())
        return Credentials(raw["access_key_id"], raw["secret_access_key"])
    return None


def load_or_create(data_dir: Path) -> Credentials:
    found = load(data_dir)
    if found is not None:
        return found
    creds = _generate()
    path = data_dir / _FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {"access_key_id": creds.access_key_id, "secret_access_key": creds.secret_access_key}, fh
        )
    print(
        "lamina: generated root credentials (shown once; `lamina credentials` prints them again):\n"
        + exports(creds),
        file=sys.stderr,
    )
    return creds


def exports(creds: Credentials) -> str:
    return (
        f"export AWS_ACCESS_KEY_ID={creds.access_key_id}\n"
        f"export AWS_SECRET_ACCESS_KEY={creds.secret_access_key}\n"
    )
