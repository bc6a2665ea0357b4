"""`lamina serve`: the platform behind uvicorn on one endpoint.

Order of start: bind the socket -> build the platform (stores, migrations) -> start serving ->
log `lamina ready on http://HOST:PORT`. On SIGTERM/SIGINT uvicorn stops accepting connections,
then the lifespan shutdown drains invocations and stops every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator

import uvicorn
import uvloop
from starlette.applications import Starlette

from lamina.api.app import build_app
from lamina.config import Settings
from lamina.platform import Platform

log = logging.getLogger("lamina")


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after shutting down, so the process would end
    "killed by SIGTERM" even after a clean drain; lamina exits 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _raise_fd_limit() -> None:
    """Every instance costs lamina a few descriptors (log pipe, Runtime API, namespace): take
    the hard limit rather than the usual soft 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _raise_fd_limit()
    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        print(f"lamina: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    platform = Platform.build(settings)
    sockets = [sock]
    if platform.isolation is not None:
        # Instances live in their own network namespaces; they reach lamina at the host address
        # every sandbox routes to, on the same port.
        inner = platform.isolation.endpoint_address
        try:
            sockets.append(_bind(inner, port))
        except OSError as exc:
            print(f"lamina: cannot listen on {inner}:{port} for instances: {exc}", file=sys.stderr)
            return 1
        platform.functions.endpoint_url = f"http://{inner}:{port}"
    else:
        local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        platform.functions.endpoint_url = f"http://{local}:{port}"
    app = build_app(platform)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        platform.start()
        yield
        await platform.stop()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # lamina is the endpoint, not behind a proxy it trusts
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=75,
        backlog=2048,
    )
    server = _Server(config)

    async def main() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=sockets))
        while not server.started and not serving.done():  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.005)
        if server.started:
            # What start-up built (modules, models, the platform) lives as long as lamina:
            # out of the collector's reach, a full collection no longer walks it (a gen-2 pass
            # over it took ~55 ms of the event loop in a burst of cold starts).
            gc.collect()
            gc.freeze()
            print(f"lamina ready on {url}", file=sys.stderr, flush=True)
            log.info("data dir %s; isolation %s", settings.data_path, settings.isolation)
        await serving

    uvloop.run(main())
    return 0
