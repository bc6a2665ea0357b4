"""A blueprint: everything needed to start an instance of one function version.

The control plane builds one per (function, version, revision); instances started from the same
blueprint are interchangeable, and a new revision (code or configuration update) means a new
blueprint, so instances of the old one are retired.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lamina.auth.sessions import SessionCredentials
from lamina.runtimes.registry import RuntimeSpec
from lamina.worker.sandbox import SandboxSpec

TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
# Where Lambda's X-Ray daemon listens; nothing listens here, and the X-Ray SDK drops what it
# sends (UDP) without complaint, as it does on Lambda when tracing is off.
XRAY_DAEMON = "169.254.79.129:2000"


@dataclass(frozen=True, slots=True)
class Blueprint:
    name: str
    version: str
    revision_id: str
    arn: str
    runtime: RuntimeSpec
    handler: str
    memory_mb: int
    timeout_s: int
    task_root: Path
    region: str
    environment: dict[str, str] = field(default_factory=dict)
    ephemeral_mb: int = 512
    log_format: str = "Text"
    log_level: str | None = None
    endpoint_url: str | None = None
    network: str = "egress"  # "none": the instance gets a network namespace with loopback only
    # Mints execution-role credentials (the function's role, session = its name) for one new
    # instance; None: the instance gets no AWS credentials (a Functions not wired to IAM).
    credentials: Callable[[], SessionCredentials] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}:{self.revision_id}:{self.network}"

    @property
    def interpreter(self) -> str:
        """The interpreter whose zygote forks this function's instances (custom runtimes: ours)."""
        return self.runtime.interpreter or sys.executable

    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"

    def sandbox_spec(
        self,
        runtime_api: str,
        confined: bool,
        initialization_type: str = "on-demand",
        credentials: SessionCredentials | None = None,
    ) -> SandboxSpec:
        """The environment of spec §2.5, with the user's variables under the reserved ones.

        `confined`: the runtime sees its code at /var/task (a sandbox mounts it there);
        otherwise it runs where the code lies on the host. `credentials`: the instance's
        execution-role credentials (the pool mints them, to know when they run out); when not
        given they are minted here.
        """
        day = time.strftime("%Y/%m/%d", time.gmtime())
        stream = f"{day}/[{self.version}]{secrets.token_hex(16)}"
        root = TASK_ROOT if confined else str(self.task_root)
        sdk = self.runtime.sdk_path
        # The SDK is mounted at /var/runtime in a sandbox, as Lambda's own runtime files are.
        runtime_dir = RUNTIME_DIR if confined or sdk is None else str(sdk)
        env = dict(self.environment)
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": runtime_api,
                "_HANDLER": self.handler,
                "LAMBDA_TASK_ROOT": root,
                "LAMBDA_RUNTIME_DIR": runtime_dir,
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_LAMBDA_FUNCTION_NAME": self.name,
                "AWS_LAMBDA_FUNCTION_VERSION": self.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group(),
                "AWS_LAMBDA_LOG_STREAM_NAME": stream,
                "AWS_LAMBDA_INITIALIZATION_TYPE": initialization_type,
                "AWS_LAMBDA_LOG_FORMAT": self.log_format,
                "TZ": ":UTC",
                "LANG": "en_US.UTF-8",
                "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
                "LD_LIBRARY_PATH": (
                    f"/lib64:/usr/lib64:{runtime_dir}:{runtime_dir}/lib:{root}:{root}/lib:/opt/lib"
                ),
                "AWS_XRAY_DAEMON_ADDRESS": XRAY_DAEMON,
                "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
                "HOME": "/tmp" if confined else os.environ.get("HOME", "/tmp"),
            }
        )
        if self.log_level:
            env["AWS_LAMBDA_LOG_LEVEL"] = self.log_level
        if self.runtime.kind == "python":
            env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{self.runtime.name}"
            if sdk is not None:
                env["LAMINA_RUNTIME_PATH"] = runtime_dir
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        # The execution role's temporary credentials, as Lambda gives them (the SDK inside the
        # function signs with them; IAM judges the calls by the role's policies).
        if credentials is None and self.credentials is not None:
            credentials = self.credentials()
        if credentials is not None:
            env["AWS_ACCESS_KEY_ID"] = credentials.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = credentials.secret_access_key
            env["AWS_SESSION_TOKEN"] = credentials.session_token
        custom = self.runtime.kind != "python"
        return SandboxSpec(
            argv=self.runtime.argv(self.task_root),
            cwd=str(self.task_root),
            env=env,
            memory_mb=self.memory_mb,
            ephemeral_mb=self.ephemeral_mb,
            interpreter=self.interpreter,
            exec_argv=[f"{TASK_ROOT}/bootstrap"] if custom else None,
            task_root=str(self.task_root),
            ro_binds=tuple(p for p in self.runtime.ro_binds if sdk is None or p != str(sdk)),
            runtime_dir=str(sdk) if sdk is not None else "",
            network=self.network,
        )
