"""A real `lamina serve` subprocess on an ephemeral port, for end-to-end tests."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

READY = re.compile(r"lamina ready on (http://\S+)")
ROLE = "arn:aws:iam::000000000000:role/lamina-test"


class Server:
    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = list(extra)
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._pump_thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> Server:
        self.url = ""
        env = {**os.environ, "LAMINA_LOG_LEVEL": "info", **self.env}
        for key in ("AWS_ENDPOINT_URL", "LAMINA_CONFIG"):
            env.pop(key, None)
        argv = [sys.executable, "-m", "lamina", "serve", "--port", "0"]
        argv += ["--data-dir", str(self.data_dir), *self.extra]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("lamina serve did not start:\n" + "".join(self.output))
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code

    @property
    def log(self) -> str:
        return "".join(self.output)

    def client(self, service: str = "lambda", **config: Any) -> Any:
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, **config)
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="AKIATESTTESTTESTTEST",
            aws_secret_access_key="test-secret",
            config=cfg,
        )


@contextmanager
def running(data_dir: Path, *extra: str) -> Iterator[Server]:
    server = Server(data_dir, *extra).start()
    try:
        yield server
    finally:
        server.stop()


def make_zip(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


def python_runtime() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def create(client: Any, name: str, code: str | dict[str, str | bytes], **kwargs: Any) -> Any:
    files: dict[str, str | bytes] = {"app.py": code} if isinstance(code, str) else code
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": python_runtime(),
        "Handler": "app.handler",
        "Role": ROLE,
        "Code": {"ZipFile": make_zip(files, kwargs.pop("modes", None))},
    }
    params.update(kwargs)
    return client.create_function(**params)
