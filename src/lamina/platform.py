"""The embedded platform: every part built in one place, started and stopped in order.

    settings -> stores (metadata, code) -> runtimes -> functions -> pool -> invoker

`start` brings them up; `stop` stops accepting, drains invocations, stops every instance and
closes the stores — each step once, so calling it twice is safe.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lamina.auth.secrets import SecretBox
from lamina.auth.sessions import InstanceSessions, SessionCredentials, lambda_may_assume
from lamina.config import Settings
from lamina.control.event_invoke import EventInvokeConfigs
from lamina.control.functions import Functions
from lamina.control.permissions import Permissions
from lamina.credentials import Credentials, load_or_create
from lamina.invoke.router import Invoker
from lamina.runtimes.registry import RuntimeRegistry, sdk_path
from lamina.store.code import CodeStore
from lamina.store.iam import IamStore
from lamina.store.metadata import MetadataStore
from lamina.store.policies import PolicyStore
from lamina.worker.isolated import IsolatedSandbox, IsolationHost, IsolationUnavailable
from lamina.worker.pool import Pool
from lamina.worker.provisioned import Provisioned
from lamina.worker.sandbox import ProcessSandbox

log = logging.getLogger("lamina")


@dataclass
class Platform:
    settings: Settings
    metadata: MetadataStore
    code: CodeStore
    runtimes: RuntimeRegistry
    functions: Functions
    pool: Pool
    invoker: Invoker
    event_configs: EventInvokeConfigs
    credentials: Credentials
    provisioned: Provisioned
    iam: IamStore  # IAM users, keys, roles, policies and STS sessions (same database)
    permissions: Permissions  # functions' resource-based policies (AddPermission)
    isolation: IsolationHost | None = None  # None: instances are plain processes
    # instances' execution-role credentials: minted and verified in memory (auth/sessions.py)
    sessions: InstanceSessions = field(default_factory=InstanceSessions)
    started: float = field(default_factory=time.time)
    _url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _stopped: bool = False

    @classmethod
    def build(cls, settings: Settings) -> Platform:
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        isolation = _isolation(settings)  # first: a host that cannot isolate gets nothing written
        metadata = MetadataStore.open(data)
        code = CodeStore(data / "code")
        runtimes = RuntimeRegistry(settings.runtime_overrides(), sdk_path(data / "runtime"))
        if isolation is None:
            pool = Pool(lambda _bp: ProcessSandbox(), settings.idle_timeout)
        else:
            host = isolation
            pool = Pool(
                lambda bp: IsolatedSandbox(host, bp.network, bp.interpreter), settings.idle_timeout
            )
        functions = Functions(settings, metadata, code, runtimes, pool.retire)
        event_configs = EventInvokeConfigs(functions, metadata)
        functions.on_delete.append(event_configs.forget)
        permissions = Permissions(functions, PolicyStore(metadata.engine))
        functions.on_delete.append(permissions.forget)
        credentials = load_or_create(data)
        iam = IamStore(
            metadata.engine, SecretBox.for_data_dir(data), settings.account_id, credentials
        )
        sessions = InstanceSessions()
        _wire_execution_roles(functions, iam, sessions, settings.credentials_ttl)
        return cls(
            settings=settings,
            metadata=metadata,
            code=code,
            runtimes=runtimes,
            functions=functions,
            pool=pool,
            invoker=Invoker(functions, pool, event_configs),
            event_configs=event_configs,
            credentials=credentials,
            provisioned=Provisioned(functions, pool, data / "provisioned.json"),
            iam=iam,
            sessions=sessions,
            permissions=permissions,
            isolation=isolation,
        )

    def start(self) -> None:
        """Start the background parts (needs a running event loop)."""
        self.pool.start()
        self.invoker.start()
        self.provisioned.start()  # starts the instances of stored configs again
        if self.isolation is None:
            log.warning(
                "isolation: process — instances run as plain processes: NO namespaces, cgroups "
                "or seccomp (started with --isolation process)"
            )
        else:
            log.info("isolation: namespaces — %s", self.isolation.summary())
        if not self.settings.auth:
            log.warning(
                "AUTH IS OFF (--no-auth): requests are not authenticated and no policy is "
                "checked — anyone who can reach %s:%s can do anything. Throwaway local use only.",
                self.settings.host,
                self.settings.port,
            )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.invoker.drain()  # 1. stop accepting events, finish what is running
        await self.provisioned.stop()
        await self.pool.shutdown()  # 2. stop every instance
        if self.isolation is not None:  # 3. zygotes, network namespaces, cgroup parents
            await self.isolation.close()
        self.metadata.close()  # 4. close the store

    # -- presigned code download URLs (GetFunction's Code.Location) ----------------------------

    def sign_code_url(self, base_url: str, sha_hex: str, ttl_s: int = 600) -> str:
        expires = int(time.time()) + ttl_s
        sig = self._code_sig(sha_hex, expires)
        return f"{base_url.rstrip('/')}/_lamina/code/{sha_hex}?expires={expires}&signature={sig}"

    def check_code_url(self, sha_hex: str, expires: str, signature: str) -> bool:
        try:
            when = int(expires)
        except ValueError:
            return False
        good = hmac.compare_digest(self._code_sig(sha_hex, when), signature)
        return good and when >= time.time()

    def _code_sig(self, sha_hex: str, expires: int) -> str:
        msg = f"{sha_hex}:{expires}".encode()
        return hmac.new(self._url_key, msg, hashlib.sha256).hexdigest()

    def health(self) -> dict[str, object]:
        pool = self.pool.stats()
        return {
            "status": "ok",
            "version": __import__("lamina").__version__,
            "isolation": self.settings.isolation,
            "isolation_note": (
                "instances are plain processes: no namespaces, cgroups or seccomp"
                if self.isolation is None
                else self.isolation.summary()
            ),
            "sandbox": self.isolation.describe() if self.isolation is not None else None,
            "auth": (
                "sigv4 + IAM policies"
                if self.settings.auth
                else "OFF (--no-auth): anyone who can connect can do anything"
            ),
            "uptime_s": round(time.time() - self.started, 3),
            "functions": len(self.functions.names()),
            "instances": {
                "total": pool.instances,
                "idle": pool.idle,
                "busy": pool.busy,
                "cold_starts": pool.cold_starts,
            },
            "invocations": self.invoker.stats(),
            "runtimes": self.runtimes.available(),
        }


def _wire_execution_roles(
    functions: Functions, iam: IamStore, sessions: InstanceSessions, ttl_s: int
) -> None:
    """Give the control plane IAM's answers as callables (no import cycle): whether Lambda may
    assume a role (CreateFunction), and minters of the instances' role credentials."""
    if ttl_s < 2:
        raise SystemExit("lamina: --credentials-ttl must be at least 2 seconds")

    def may_assume(role_arn: str) -> bool:
        role = iam.role(role_arn)
        return role is not None and lambda_may_assume(role.arn, role.trust_policy)

    def credentials_for(role_arn: str, function_name: str) -> Callable[[], SessionCredentials]:
        role = iam.role(role_arn)  # once per blueprint: the real role id, when it still exists
        return sessions.minter(role_arn, function_name, ttl_s, role.role_id if role else None)

    functions.role_check = may_assume
    functions.credentials_for = credentials_for


def _isolation(settings: Settings) -> IsolationHost | None:
    """The sandbox host for `--isolation namespaces`; None for `process`. Never silently weaker:
    a host that cannot isolate makes lamina refuse to start, saying what is missing."""
    if settings.isolation == "process":
        return None
    if settings.isolation != "namespaces":
        raise SystemExit(
            f"lamina: unknown isolation '{settings.isolation}': use namespaces (the default) "
            "or process"
        )
    try:
        host = IsolationHost.probe()
    except IsolationUnavailable as exc:
        raise SystemExit(
            f"lamina: cannot isolate function instances on this host: {exc}.\n"
            "Start with --isolation process to run them as plain processes, without isolation."
        ) from None
    host.start(blanks=settings.blanks, idle_timeout=settings.idle_timeout)
    return host
