"""The deploy lock, held on the fleet (the first load balancer, or rollout_lock_host), and the
release history kept beside it. Every call is one small playbook (playbooks/rollout/lock.yml).

A rollout holds the lock with a lease that a background heartbeat renews; when the renewal finds
the lock gone or someone else's (`lock release --force`, or an expired lease taken over), the
rollout stops at its next step instead of carrying on."""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from inkdeploy.errors import InkdeployError
from inkdeploy.fastpath import FastPath, RemoteError
from inkdeploy.lab.procs import pid_alive
from inkdeploy.runner import Runner


class LockHeld(InkdeployError):
    exit_code = 3


def whoami() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or getpass.getuser()


def holder_info(rollout: str, version: str, strategy: str, message: str) -> dict[str, Any]:
    return {
        "user": whoami(),
        "controller": socket.gethostname(),
        "pid": os.getpid(),
        "rollout": rollout,
        "version": version,
        "strategy": strategy,
        "message": message,
    }


def describe_holder(holder: dict[str, Any], stale_after: float) -> str:
    """'alice on ops1 (pid 4242) since 14:02:11 UTC, 12 min ago, rolling out 2.3.1 (canary):
    "friday fix"' plus a staleness verdict."""
    if holder.get("corrupt"):
        return "an unreadable lock file (it counts as free a minute after it was written)"
    since = holder.get("acquired_at", 0.0)
    age = time.time() - since
    what = (
        f"rolling out {holder['version']} ({holder.get('strategy', '?')})"
        if holder.get("version")
        else "held by hand"
    )
    text = (
        f"{holder.get('user', '?')} on {holder.get('controller', '?')}"
        f" (pid {holder.get('pid', '?')})"
        f" since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since))},"
        f" {age / 60:.0f} min ago, {what}"
    )
    if holder.get("message"):
        text += f': "{holder["message"]}"'
    verdict = staleness(holder, stale_after)
    return text + (f" [{verdict}]" if verdict else "")


def staleness(holder: dict[str, Any], stale_after: float) -> str:
    """'' for a live lock; otherwise why it looks stale."""
    if holder.get("expired"):
        silent = time.time() - float(holder.get("heartbeat_at") or 0)
        return (
            f"stale: its lease ran out, not renewed for {silent:.0f} s; the next rollout "
            "takes it over"
        )
    if (
        holder.get("controller") == socket.gethostname()
        and holder.get("pid")
        and not pid_alive(int(holder["pid"]))
    ):
        return "stale: that process no longer runs on this controller"
    if not holder.get("lease_s") and time.time() - holder.get("acquired_at", time.time()) > (
        stale_after
    ):
        return f"possibly stale: older than {stale_after / 3600:.1f} h"
    return ""


@dataclass
class FleetLock:
    runner: Runner
    app: str
    stale_after: float = 7200.0
    # one SSH command instead of a playbook (inkdeploy/fastpath.py); None: the playbook
    fast: FastPath | None = None

    def args(self, **args: Any) -> dict[str, Any]:
        """The lock module's arguments for this lock."""
        return {"name": self.app, **args}

    def _call(self, **args: Any) -> dict[str, Any]:
        if self.fast is not None:
            try:
                done = self.fast.lock(self.args(**args))
            except RemoteError as exc:
                if exc.unreachable or exc.refused:
                    raise InkdeployError(
                        f"Could not reach the deploy lock on the fleet: {exc}. Check that the "
                        "first load balancer is reachable (`inkdeploy lab status` on a lab)."
                    ) from None
                done = None  # the playbook may get through where the fast path cannot
            if done is not None:
                return done
        result = self.runner.run(
            "rollout/lock.yml",
            {"rollout_lock": self.args(**args)},
            collect=("Lock and history",),
        )
        if not result.ok:
            raise InkdeployError(
                f"Could not reach the deploy lock on the fleet: {result.first_failure()}. "
                "Check that the first load balancer is reachable (`inkdeploy lab status` on a lab)."
            )
        values = list(result.results.get("Lock and history", {}).values())
        if not values:
            raise InkdeployError(
                "The inventory has no load balancer to hold the deploy lock; "
                "add a host to group lb or set rollout_lock_host."
            )
        return values[0]

    def query(self) -> dict[str, Any]:
        return self._call(state="query")

    def acquire(
        self, holder: dict[str, Any], *, takeover: bool = False, lease_s: float = 0.0
    ) -> dict[str, Any]:
        """Take the lock or raise LockHeld naming the holder. TAKEOVER: the caller resumes the
        rollout that holds it (same rollout id). LEASE_S: the lock is held only while
        heartbeat() renews it that often (0: until released, a freeze held by hand)."""
        state = self._call(
            state="acquire",
            holder=holder,
            rollout=holder["rollout"] if takeover else "",
            lease_s=lease_s,
        )
        if not state["acquired"]:
            raise LockHeld(
                "Another rollout holds the deploy lock: "
                f"{describe_holder(state['holder'], self.stale_after)}. Wait for it "
                "(--lock-wait), or if it is stale, `inkdeploy lock release --force`."
            )
        return state["holder"]

    def wait_free(self, wait_s: float, poll_s: float = 10) -> None:
        """Wait up to WAIT_S for the lock to be free (--lock-wait); the caller then acquires it
        (atomically: a rival that wins the race in between still gets LockHeld)."""
        deadline = time.monotonic() + wait_s
        while True:
            holder = self.query().get("holder") or {}
            if not holder or holder.get("expired"):
                return  # an expired lease is taken over by the acquire
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"The deploy lock was still held after {wait_s:.0f} s: "
                    f"{describe_holder(holder, self.stale_after)}."
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def heartbeat(self, rollout: str) -> dict[str, Any]:
        """Renew ROLLOUT's lease; the result's `acquired` is False when the lock is no longer
        ROLLOUT's (released by force, or taken over after the lease ran out)."""
        return self._call(state="heartbeat", rollout=rollout, history_lines=0)

    def release(
        self, rollout: str, record: dict[str, Any] | None = None, force: bool = False
    ) -> dict[str, Any]:
        return self._call(state="release", rollout=rollout, record=record or {}, force=force)

    def record(self, entry: dict[str, Any]) -> None:
        self._call(state="query", record=entry)


class Heartbeat:
    """Renews a rollout's lease every INTERVAL_S in a background thread. `lost` becomes the
    lock's holder as last seen ({} when free) once the lock is no longer the rollout's; the
    executor checks it between steps and while it waits. A failed renewal (the lock host did
    not answer) is retried at the next interval: the lease is several intervals long."""

    def __init__(self, lock: FleetLock, rollout: str, interval_s: float) -> None:
        self.lock = lock
        self.rollout = rollout
        self.interval_s = interval_s
        self.lost: dict[str, Any] | None = None
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lock-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No renewal after this returns (call it before releasing the lock)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                state = self.heartbeat_once()
            except InkdeployError:
                self.failures += 1
                continue
            if not state.get("acquired"):
                self.lost = state.get("holder") or {}
                return

    def heartbeat_once(self) -> dict[str, Any]:
        return self.lock.heartbeat(self.rollout)
