"""The pool of ready network namespaces (see `netns.py` for what a namespace holds).

A background thread keeps a few namespaces of each kind made and checks released ones before
they are reused, so a cold start takes one from the pool instead of paying for its creation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from lamina.worker.netns import KINDS, Kind, Netns, NetworkHost

log = logging.getLogger("lamina.netns")
# -- the pool ------------------------------------------------------------------------------------


@dataclass(slots=True)
class PoolStats:
    created: int = 0  # by the refill thread
    created_sync: int = 0  # by acquire() on an empty pool
    sync_create_ms: float = 0.0  # total time acquire() spent creating
    sync_create_max_ms: float = 0.0
    reused: int = 0  # acquired from the pool (fresh or recycled)
    recycled: int = 0  # released and put back
    discarded_unclean: int = 0  # released with sockets still open inside: destroyed
    destroyed: int = 0


class NetnsPool:
    """Ready namespaces of one kind. A background thread keeps `target_size` idle ones made and
    checks released ones before they are reused; `acquire()` never waits for that thread (on an
    empty pool it makes one itself, ~1 ms) and `release()` is O(1), so both suit the event loop.
    Released namespaces beyond `max_idle` are destroyed."""

    sweep_stale = staticmethod(NetworkHost.sweep_stale)

    def __init__(
        self,
        host: NetworkHost,
        kind: Kind = "egress",
        target_size: int = 8,
        max_idle: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown network kind {kind!r} (egress or none)")
        self.host = host
        self.kind: Kind = kind
        self.target_size = target_size
        self.max_idle = max(target_size, 2 * target_size if max_idle is None else max_idle)
        self.stats = PoolStats()
        self._cond = threading.Condition()
        self._idle: deque[Netns] = deque()
        self._returned: deque[Netns] = deque()
        self._mine: set[Netns] = set()  # every live namespace this pool made
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"lamina-netns-{kind}", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def acquire(self) -> Netns:
        """A ready namespace: from the pool, else made now."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the namespace pool is closed")
            ns = self._idle.popleft() if self._idle else None
            self._cond.notify()
            if ns is not None:
                self.stats.reused += 1
                ns.uses += 1
                return ns
        start = time.perf_counter()
        ns = self.host.create(self.kind)
        elapsed = (time.perf_counter() - start) * 1000
        with self._cond:
            closed = self._closed
            if not closed:
                self._mine.add(ns)
                self.stats.created_sync += 1
                self.stats.sync_create_ms += elapsed
                self.stats.sync_create_max_ms = max(self.stats.sync_create_max_ms, elapsed)
        if closed:
            self.host.destroy(ns)
            raise RuntimeError("the namespace pool is closed")
        log.debug("namespace pool %s was empty: made one in %.2f ms", self.kind, elapsed)
        ns.uses += 1
        return ns

    def release(self, ns: Netns) -> None:
        """Give `ns` back once its processes are dead and lamina's sockets in it are closed."""
        with self._cond:
            if ns not in self._mine:
                raise ValueError(f"{ns!r} does not belong to this pool")
            if not self._closed:
                self._returned.append(ns)
                self._cond.notify()
                return
            self._mine.discard(ns)
        self.host.destroy(ns)

    def close(self) -> None:
        """Stop refilling and destroy every namespace this pool made, leased ones included;
        returns once their veths are gone. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            doomed = list(self._mine)
            self._mine.clear()
            self._idle.clear()
            self._returned.clear()
            self.stats.destroyed += len(doomed)
        self.host.destroy_many(doomed)

    def _run(self) -> None:
        """Check released namespaces first, then make new ones up to `target_size`."""
        delay, retry_at = 0.0, 0.0  # after a failed create, wait before the next try
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._returned:
                        break
                    wait = None
                    if len(self._idle) < self.target_size:
                        wait = retry_at - time.monotonic()
                        if wait <= 0:
                            break
                    self._cond.wait(wait)
                returned = list(self._returned)
                self._returned.clear()
            if returned:
                for ns in returned:
                    self._recycle(ns)
                continue
            try:
                ns = self.host.create(self.kind)
            except Exception as exc:  # logged; acquire() still makes one itself (and raises)
                if not delay:
                    log.warning("could not make a %s network namespace: %s", self.kind, exc)
                delay = min(5.0, delay * 2 or 0.1)
                retry_at = time.monotonic() + delay
                continue
            delay = 0.0
            with self._cond:
                closed = self._closed
                if not closed:
                    self._mine.add(ns)
                    self._idle.append(ns)
                    self.stats.created += 1
            if closed:
                self.host.destroy(ns)
                return

    def _recycle(self, ns: Netns) -> None:
        """Put a released namespace back if nothing is open inside, else destroy it."""
        try:
            leftovers = ns.open_sockets()
        except OSError:
            leftovers = -1
        with self._cond:
            if leftovers == 0 and len(self._idle) < self.max_idle and not self._closed:
                self._idle.append(ns)
                self.stats.recycled += 1
                return
            self._mine.discard(ns)
            self.stats.destroyed += 1
            if leftovers:
                self.stats.discarded_unclean += 1
        if leftovers:
            log.warning(
                "%r still has %s sockets open once released: destroyed, not reused", ns, leftovers
            )
        self.host.destroy(ns, cut_off=bool(leftovers))
