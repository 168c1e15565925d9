"""The pod's policy, reloaded when its file changes; a bad version never replaces a good one.

In a cluster the file is a ConfigMap volume: kubelet swaps a ``..data`` symlink when the
ConfigMap changes, so the file's path stays the same while what it resolves to changes.
Polling ``stat`` of the resolved file (device, inode, size, mtime) once a second sees both
that and an in-place edit, needs no inotify, and costs a syscall. A version that fails
to load is logged in one line (``PolicyError``'s reason) and counted in
``promptcache_policy_reload_errors_total``; the last good policy stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from promptcache.policy import LoadedPolicy, PolicyError, load_policy_file
from promptcache.sidecar.metrics import Metrics

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int, int]


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyWatch:
    """Holds the policy in force and reloads it when the file changes."""

    def __init__(self, path: Path | None, *, metrics: Metrics, interval: float = 1.0) -> None:
        self.path = path
        self.current: LoadedPolicy | None = None
        """The policy in force (``None``: no policy file, or none valid yet)."""
        self.last_error: str | None = None
        """Why the newest version was rejected, if it was (one line)."""
        self.attempted = path is None
        """A first load was tried (readiness waits for it)."""
        self._metrics = metrics
        self._interval = interval
        self._stamp: _Stamp | None = None

    def check(self) -> bool:
        """Reload if the file changed since the last check; True if a new policy is in force."""
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if self.attempted and stamp == self._stamp:
            return False
        self._stamp = stamp
        self.attempted = True
        try:
            loaded = load_policy_file(self.path)
        except PolicyError as exc:
            self.last_error = str(exc)
            self._metrics.policy_reload_errors.inc()
            kept = self.current.name if self.current else "none (pass-through)"
            log.warning("policy rejected, keeping %s: %s", kept, self.last_error)
            return False
        self.last_error = None
        changed = self.current is None or loaded != self.current
        self.current = loaded
        if changed:
            log.info("policy %s loaded from %s (mode %s)", loaded.name, self.path, loaded.spec.mode)
        return changed

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                # A ConfigMap swap can briefly show a half-made state; the next poll fixes it.
                self.check()
            except Exception:  # the watcher must outlive any surprise
                log.exception("policy watch: unexpected error")
