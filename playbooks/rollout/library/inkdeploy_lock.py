#!/usr/bin/python
"""The deploy lock and release history, kept on the fleet (one host, the lock host)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: inkdeploy_lock
short_description: Deploy lock and release history of inkdeploy, on the fleet
description:
  - The lock is a JSON file that appears atomically and complete (written to a temporary file,
    then hard-linked into place, which fails when the lock exists), so two controllers racing
    for it cannot both win and a crash never leaves an empty lock. It names who holds it, since
    when, for which version and why.
  - A holder with a lease (lease_s > 0) must renew it (state=heartbeat) within lease_s seconds;
    an expired lease no longer holds the lock, so a holder that died on any controller is
    recognised and the next acquire takes the lock over (recorded in the history).
  - An empty or unreadable lock file (left by older versions or a full disk) older than
    grace_s counts as free.
  - The history is an append-only JSON lines file of finished rollouts and rollbacks.
options:
  state:
    description: >-
      acquire, release, heartbeat (renew the lease of the holder named by rollout), or query
      (read the lock and the history; changes nothing).
    type: str
    choices: [acquire, release, heartbeat, query]
    default: query
  dir:
    description: Directory of the lock and history files.
    type: path
    default: /var/lib/inkdeploy
  name:
    description: Lock name (one per application).
    type: str
    required: true
  holder:
    description: What the lock records (user, controller, pid, rollout, version, message).
    type: dict
    default: {}
  rollout:
    description: >-
      Release only a lock held by this rollout id; acquire succeeds if the lock is already held by
      it (a resumed rollout takes its own lock back).
    type: str
    default: ""
  force:
    description: Release (or take over) the lock whoever holds it.
    type: bool
    default: false
  record:
    description: With state=release, or alone with state=query, append this entry to the history.
    type: dict
    default: {}
  lease_s:
    description: >-
      With state=acquire, the holder's lease in seconds (0 = no lease, e.g. a freeze held by
      hand: it holds until released).
    type: float
    default: 0
  grace_s:
    description: An empty or unreadable lock file younger than this still counts as held.
    type: float
    default: 60
  history_lines:
    description: How many of the newest history entries to return.
    type: int
    default: 200
author: inkdeploy
"""

RETURN = r"""
acquired:
  description: Whether this call holds the lock now (acquire).
  type: bool
  returned: always
holder:
  description: >-
    The lock's content (who holds it), empty when free. C(expired) is true when its lease ran
    out (it no longer holds the lock).
  type: dict
  returned: always
took_over:
  description: The holder whose expired lease (or unreadable file) this acquire replaced.
  type: dict
  returned: always
history:
  description: Newest history entries, oldest first.
  type: list
  returned: always
"""

import contextlib
import fcntl
import json
import os
import time

try:
    from ansible.module_utils.basic import AnsibleModule
except ImportError:  # run as a payload over SSH by the orchestrator (inkdeploy/remote.py)
    AnsibleModule = None

ARGUMENT_SPEC = {
    "state": {
        "type": "str",
        "choices": ["acquire", "release", "heartbeat", "query"],
        "default": "query",
    },
    "dir": {"type": "path", "default": "/var/lib/inkdeploy"},
    "name": {"type": "str", "required": True},
    "holder": {"type": "dict", "default": {}},
    "rollout": {"type": "str", "default": ""},
    "force": {"type": "bool", "default": False},
    "record": {"type": "dict", "default": {}},
    "lease_s": {"type": "float", "default": 0},
    "grace_s": {"type": "float", "default": 60},
    "history_lines": {"type": "int", "default": 200},
}


def _read(path, grace_s):
    """The holder, {} when free; an empty or unreadable file counts as free after GRACE_S."""
    try:
        with open(path) as handle:
            text = handle.read()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return {}
    try:
        holder = json.loads(text)
        if not isinstance(holder, dict) or not holder:
            raise ValueError("not a holder")
    except ValueError:
        if age > grace_s:
            return {}
        return {"corrupt": True, "rollout": "", "acquired_at": time.time() - age}
    if _expired(holder):
        holder["expired"] = True
    return holder


def _expired(holder):
    lease = float(holder.get("lease_s") or 0)
    return lease > 0 and time.time() - float(holder.get("heartbeat_at") or 0) > lease


def _history(path, lines):
    if lines <= 0:
        return []
    try:
        with open(path) as handle:
            rows = handle.read().splitlines()
    except FileNotFoundError:
        return []
    result = []
    for row in rows[-lines:]:
        try:
            result.append(json.loads(row))
        except ValueError:
            continue
    return result


def _append(path, entry):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(path, holder):
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, json.dumps(holder, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _create(path, holder):
    """Put a complete lock file in place unless one exists (FileExistsError)."""
    tmp = _write_tmp(path, holder)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _replace(path, holder):
    os.replace(_write_tmp(path, holder), path)


def run(params, check_mode=False):
    """The module's work; PARAMS as the argument spec describes (defaults filled in here)."""
    params = dict({k: v.get("default") for k, v in ARGUMENT_SPEC.items()}, **params)
    base = params["dir"]
    lock_path = os.path.join(base, params["name"] + ".lock")
    history_path = os.path.join(base, params["name"] + ".history.jsonl")
    state = params["state"]
    changed = False
    acquired = False
    took_over = {}
    writes = state != "query" or bool(params["record"])
    if writes and not check_mode:
        os.makedirs(base, mode=0o750, exist_ok=True)
        # One writer at a time per lock: a heartbeat must not write back a lock that a release
        # (or a takeover) removed a moment before. Readers need no guard: the lock file is
        # always replaced whole (rename or link).
        guard = os.open(lock_path + ".guard", os.O_WRONLY | os.O_CREAT, 0o640)
        fcntl.flock(guard, fcntl.LOCK_EX)
    holder = _read(lock_path, params["grace_s"])
    mine = bool(params["rollout"]) and holder.get("rollout") == params["rollout"]
    now = time.time()

    if state == "acquire" and not check_mode:
        entry = dict(params["holder"], acquired_at=now)
        if params["lease_s"] > 0:
            entry.update(lease_s=params["lease_s"], heartbeat_at=now)
        if holder and (mine or params["force"] or holder.get("expired")):
            if not mine:
                took_over = holder
            _replace(lock_path, entry)
            holder, acquired, changed = entry, True, True
        elif not holder:
            try:
                _create(lock_path, entry)
                holder, acquired, changed = entry, True, True
            except FileExistsError:
                # an empty or unreadable leftover past its grace, or a rival that just won
                current = _read(lock_path, params["grace_s"])
                if current:
                    holder = current
                else:
                    _replace(lock_path, entry)
                    holder, acquired, changed = entry, True, True
        if took_over:
            record = {"kind": "lock", "result": "taken_over", "started": now}
            _append(history_path, dict(record, previous_holder=took_over, holder=entry))
    elif state == "heartbeat" and not check_mode:
        if mine:
            holder = dict(holder, heartbeat_at=now)
            holder.pop("expired", None)
            _replace(lock_path, holder)
            acquired, changed = True, True
    elif state == "release" and not check_mode:
        if params["record"]:
            _append(history_path, params["record"])
            changed = True
        if holder and (mine or params["force"]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            holder, changed = {}, True
    elif state == "query" and params["record"] and not check_mode:
        _append(history_path, params["record"])
        changed = True

    return {
        "changed": changed,
        "acquired": acquired,
        "holder": holder,
        "took_over": took_over,
        "history": _history(history_path, params["history_lines"]),
    }


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.exit_json(**run(module.params, module.check_mode))


if __name__ == "__main__":
    main()
