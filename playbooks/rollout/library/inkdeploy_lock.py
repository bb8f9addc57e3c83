#!/usr/bin/python
"""The deploy lock and release history, kept on the fleet (one host, the lock host)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: inkdeploy_lock
short_description: Deploy lock and release history of inkdeploy, on the fleet
description:
  - The lock is a JSON file created atomically (O_CREAT|O_EXCL), so two controllers racing for
    it cannot both win. It names who holds it, since when, for which version and why.
  - The history is an append-only JSON lines file of finished rollouts and rollbacks.
options:
  state:
    description: acquire, release, or query (read the lock and the history; changes nothing).
    type: str
    choices: [acquire, release, query]
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
  description: The lock's content (who holds it), empty when free.
  type: dict
  returned: always
history:
  description: Newest history entries, oldest first.
  type: list
  returned: always
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule


def _read(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError:
        return {"corrupt": True}


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


def _create(path, holder):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, json.dumps(holder, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["acquire", "release", "query"], "default": "query"},
            "dir": {"type": "path", "default": "/var/lib/inkdeploy"},
            "name": {"type": "str", "required": True},
            "holder": {"type": "dict", "default": {}},
            "rollout": {"type": "str", "default": ""},
            "force": {"type": "bool", "default": False},
            "record": {"type": "dict", "default": {}},
            "history_lines": {"type": "int", "default": 200},
        },
        supports_check_mode=True,
    )
    params = module.params
    base = params["dir"]
    lock_path = os.path.join(base, params["name"] + ".lock")
    history_path = os.path.join(base, params["name"] + ".history.jsonl")
    state = params["state"]
    changed = False
    acquired = False
    if not module.check_mode:
        os.makedirs(base, mode=0o750, exist_ok=True)
    holder = _read(lock_path)
    mine = bool(params["rollout"]) and holder.get("rollout") == params["rollout"]

    if state == "acquire" and not module.check_mode:
        if holder and (mine or params["force"]):
            entry = dict(params["holder"], acquired_at=time.time())
            tmp = lock_path + ".tmp"
            with open(tmp, "w") as handle:
                json.dump(entry, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, lock_path)
            holder, acquired, changed = entry, True, True
        elif not holder:
            entry = dict(params["holder"], acquired_at=time.time())
            try:
                _create(lock_path, entry)
                holder, acquired, changed = entry, True, True
            except FileExistsError:
                holder = _read(lock_path)
    elif state == "release" and not module.check_mode:
        if params["record"]:
            _append(history_path, params["record"])
            changed = True
        if holder and (mine or params["force"]):
            os.unlink(lock_path)
            holder, changed = {}, True
    elif state == "query" and params["record"] and not module.check_mode:
        _append(history_path, params["record"])
        changed = True

    module.exit_json(
        changed=changed,
        acquired=acquired,
        holder=holder,
        history=_history(history_path, params["history_lines"]),
    )


if __name__ == "__main__":
    main()
