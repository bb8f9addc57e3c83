"""The deploy lock, held on the fleet, and the release history kept beside it: on every host of
group deploy_lock (the lab puts both load balancers and a data host there), of which a majority
must answer, so any one of them may be down; else on rollout_lock_host or the first load
balancer alone. Every call goes to all lock hosts at once over the SSH fast path (one command per
host), or through a small playbook (playbooks/rollout/lock.yml) where that cannot serve.

A rollout holds the lock with a lease that a background heartbeat renews; when the renewal finds
the lock gone or someone else's (`lock release --force`, or an expired lease taken over), the
rollout stops at its next step instead of carrying on."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.errors import InkdeployError
from inkdeploy.fastpath import FastPath, RemoteError
from inkdeploy.inventory import Environment
from inkdeploy.lab.procs import pid_alive
from inkdeploy.runner import Runner

# How long a lock host has to answer a read (`inkdeploy status`: a dead one costs this once);
# changes get longer, a loaded host may be slow to write.
QUERY_TIMEOUT_S = 4.0
# How long a lock host has to make a change (take, renew, release, record).
CHANGE_TIMEOUT_S = 20.0
# A lock host that did not answer is left out of the next calls for this long, while the
# others are a majority.
ASK_SILENT_AGAIN_S = 30.0


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
        else "in maintenance"
        if holder.get("strategy") == "maintenance"
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


def lock_hosts(env: Environment) -> tuple[str, ...]:
    """Where the deploy lock and the history live: every host of group deploy_lock (a majority
    of them must answer), else rollout_lock_host, else the first load balancer; () when the
    inventory has none of these (a database-only inventory: no lock)."""
    if env.groups.get("deploy_lock"):
        return tuple(env.groups["deploy_lock"])
    for host in (*env.groups.get("lb", ()), *env.hostvars):
        chosen = env.hostvars.get(host, {}).get("rollout_lock_host")
        if chosen:
            return (str(chosen),)
    lbs = env.groups.get("lb") or []
    return (lbs[0],) if lbs else ()


def _key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, default=str)


def merge_history(answers: dict[str, dict[str, Any]], lines: int) -> list[dict[str, Any]]:
    """Every lock host's history as one: the union (a host that was down missed entries the
    others have), oldest first by start time, the newest LINES."""
    seen: dict[str, dict[str, Any]] = {}
    for answer in answers.values():
        for entry in answer.get("history") or []:
            if isinstance(entry, dict):
                seen.setdefault(_key(entry), entry)
    rows = sorted(seen.values(), key=lambda e: float(e.get("started") or 0))
    return rows[-lines:] if lines > 0 else []


def agreed_holder(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The holder as the lock hosts that answered report it: the live holder named by the most
    hosts (an expired lease only when no live one is left); {} when every answer is free. A
    holder on a single host still counts: it may hold a majority with the hosts that did not
    answer."""
    holders = [a.get("holder") or {} for a in answers.values()]
    live = [h for h in holders if h and not h.get("expired")]
    pool = live or [h for h in holders if h]
    if not pool:
        return {}
    counts = Counter(str(h.get("rollout", "")) for h in pool)
    top = max(counts.values())
    chosen = [h for h in pool if counts[str(h.get("rollout", ""))] == top]
    return max(chosen, key=lambda h: float(h.get("heartbeat_at") or h.get("acquired_at") or 0))


@dataclass
class FleetLock:
    """The deploy lock on a majority of its hosts (lock_hosts): every call goes to all of them
    at once; a change counts once a majority made it, so any minority may be down."""

    runner: Runner
    app: str
    stale_after: float = 7200.0
    # one SSH command per host instead of a playbook (inkdeploy/fastpath.py); None: the playbook
    fast: FastPath | None = None
    # () for a single lock host found by the playbook (rollout_lock_host or the first LB)
    hosts: tuple[str, ...] = ()
    # lock hosts that did not answer the last call, and why
    silent: dict[str, str] = field(default_factory=dict)
    # lock host -> when (time.monotonic()) it last did not answer: not asked again for
    # ASK_SILENT_AGAIN_S while the others make a majority (a dead host would cost its SSH
    # timeout on every call); shared with the heartbeat's own FleetLock (Session.hold)
    quiet_since: dict[str, float] = field(default_factory=dict)

    @property
    def quorum(self) -> int:
        return len(self.hosts) // 2 + 1 if self.hosts else 1

    def args(self, **args: Any) -> dict[str, Any]:
        """The lock module's arguments for this lock."""
        return {"name": self.app, **args}

    def _each(
        self, args: dict[str, Any], timeout_s: float = CHANGE_TIMEOUT_S
    ) -> dict[str, dict[str, Any]]:
        """The module's answer of every lock host that answered (a majority, or an error
        saying which did not); self.silent names the others."""
        answers, silent = self._each_fast(args, timeout_s)
        if answers is None:
            answers, silent = self._each_playbook(args)
        self.silent = silent
        if len(answers) < self.quorum:
            said = "; ".join(f"{h}: {why}" for h, why in silent.items()) or "no lock host"
            raise InkdeployError(
                f"Could not reach the deploy lock: {len(answers)} of "
                f"{len(self.hosts) or 1} lock hosts answered ({said}), it needs {self.quorum}. "
                "Nothing was changed; bring a lock host back (`inkdeploy lab status` on a lab)."
            )
        return answers

    def _each_fast(
        self, args: dict[str, Any], timeout_s: float
    ) -> tuple[dict[str, dict[str, Any]] | None, dict[str, str]]:
        if self.fast is None or not self.hosts:
            return None, {}
        now = time.monotonic()
        recent = {h: t for h, t in self.quiet_since.items() if now - t < ASK_SILENT_AGAIN_S}
        ask = tuple(h for h in self.hosts if h not in recent)
        if len(ask) < self.quorum:
            ask, recent = self.hosts, {}
        answers, silent = self._ask_fast(ask, args, timeout_s)
        if answers is not None and len(answers) < self.quorum and recent:
            # the hosts asked are no majority now: the ones left out may be back
            more, again = self._ask_fast(tuple(recent), args, timeout_s)
            if more is None:
                return None, {}
            answers.update(more)
            silent.update(again)
            recent = {}
        for host, at in recent.items():
            silent[host] = f"did not answer {now - at:.0f} s ago (not asked again)"
        return answers, silent

    def _ask_fast(
        self, ask: tuple[str, ...], args: dict[str, Any], timeout_s: float
    ) -> tuple[dict[str, dict[str, Any]] | None, dict[str, str]]:
        if self.fast is None:
            return None, {}
        replies = self.fast.lock_each(ask, args, timeout_s)
        if replies is None:
            return None, {}
        answers: dict[str, dict[str, Any]] = {}
        silent: dict[str, str] = {}
        for host, reply in replies.items():
            if isinstance(reply, RemoteError):
                if not (reply.unreachable or reply.refused):
                    return None, {}  # the playbook may get through where the fast path cannot
                silent[host] = reply.reason
                self.quiet_since[host] = time.monotonic()
            else:
                answers[host] = reply
                self.quiet_since.pop(host, None)
        return answers, silent

    def _each_playbook(
        self, args: dict[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        extra: dict[str, Any] = {"rollout_lock": args}
        if self.hosts:
            extra["rollout_lock_hosts"] = ",".join(self.hosts)
        result = self.runner.run("rollout/lock.yml", extra, collect=("Lock and history",))
        answers = dict(result.results.get("Lock and history", {}))
        silent = {f.host: f.message for f in result.failures if f.host not in answers}
        silent.update(result.ignored_unreachable)  # lock.yml: ignore_unreachable
        if not answers and not silent:
            raise InkdeployError(
                "The inventory has no host to hold the deploy lock; add hosts to group "
                "deploy_lock (or group lb), or set rollout_lock_host."
            )
        return answers, silent

    def query(self, history_lines: int = 200, timeout_s: float = QUERY_TIMEOUT_S) -> dict[str, Any]:
        """The holder ({} when free) and the merged history."""
        answers = self._each(self.args(state="query", history_lines=history_lines), timeout_s)
        return {"holder": agreed_holder(answers), "history": merge_history(answers, history_lines),
                "silent": dict(self.silent)}  # fmt: skip

    def acquire(
        self, holder: dict[str, Any], *, takeover: bool = False, lease_s: float = 0.0
    ) -> dict[str, Any]:
        """Take the lock on a majority of its hosts or raise LockHeld naming the holder.
        TAKEOVER: the caller resumes the rollout that holds it (same rollout id). LEASE_S: the
        lock is held only while heartbeat() renews it that often (0: until released, a freeze
        held by hand)."""
        rollout = holder["rollout"]
        answers = self._each(
            self.args(state="acquire", holder=holder, rollout=rollout if takeover else "",
                      lease_s=lease_s, history_lines=0),
        )  # fmt: skip
        granted = [h for h, a in answers.items() if a.get("acquired")]
        if len(granted) >= self.quorum:
            return answers[granted[0]]["holder"]
        if granted and not takeover:
            # a rival holds the majority: give back the hosts this call won
            with contextlib.suppress(InkdeployError):
                self._each(self.args(state="release", rollout=rollout, history_lines=0))
        other = agreed_holder({h: a for h, a in answers.items() if h not in granted})
        raise LockHeld(
            "Another rollout holds the deploy lock: "
            f"{describe_holder(other, self.stale_after)}. Wait for it "
            "(--lock-wait), or if it is stale, `inkdeploy lock release --force`."
        )

    def wait_free(self, wait_s: float, poll_s: float = 10) -> None:
        """Wait up to WAIT_S for the lock to be free (--lock-wait); the caller then acquires it
        (atomically: a rival that wins the race in between still gets LockHeld)."""
        deadline = time.monotonic() + wait_s
        while True:
            holder = self.query(history_lines=0).get("holder") or {}
            if not holder or holder.get("expired"):
                return  # an expired lease is taken over by the acquire
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"The deploy lock was still held after {wait_s:.0f} s: "
                    f"{describe_holder(holder, self.stale_after)}."
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def heartbeat(self, rollout: str) -> dict[str, Any]:
        """Renew ROLLOUT's lease on every lock host; the result's `acquired` is False when a
        majority no longer has it as ROLLOUT's (released by force, or taken over after the
        lease ran out). A lock host that came back empty gets the lock again."""
        answers = self._each(self.args(state="heartbeat", rollout=rollout, history_lines=0))
        renewed = [h for h, a in answers.items() if a.get("acquired")]
        if len(renewed) < self.quorum:
            rest = {h: a for h, a in answers.items() if h not in renewed}
            return {"acquired": False, "holder": agreed_holder(rest)}
        mine = answers[renewed[0]]["holder"]
        empty = [h for h, a in answers.items() if not a.get("holder")]
        if empty and self.fast is not None:
            entry = {k: v for k, v in mine.items() if k not in ("expired", "heartbeat_at")}
            args = self.args(state="acquire", holder=entry, rollout=rollout,
                             lease_s=float(mine.get("lease_s") or 0), history_lines=0)  # fmt: skip
            with contextlib.suppress(RemoteError):
                self.fast.lock_each(tuple(empty), args, 10.0)
        return {"acquired": True, "holder": mine}

    def release(
        self, rollout: str, record: dict[str, Any] | None = None, force: bool = False
    ) -> dict[str, Any]:
        answers = self._each(
            self.args(state="release", rollout=rollout, record=record or {}, force=force,
                      history_lines=0),
        )  # fmt: skip
        return {"holder": agreed_holder(answers), "silent": dict(self.silent)}

    def record(self, entry: dict[str, Any]) -> None:
        self._each(self.args(state="query", record=entry, history_lines=0))


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
