#!/usr/bin/python
"""What an app host runs: each slot's release, whether it is up and healthy, what is installed."""

from __future__ import annotations

DOCUMENTATION = r"""
module: inkdeploy_slots
short_description: Report the release, state and health of each app slot on a host
description:
  - Reads the slot links under ROOT/APP/slots, the systemd state of APP@SLOT, asks each running
    slot's health URL for its version, and lists the complete releases under ROOT/APP/releases.
  - On a Celery host, lists the APP-celery-worker@QUEUE units with their state and the release
    each running worker was started from, and the state of APP-celery-beat.
  - Changes nothing.
options:
  app:
    description: Application name.
    type: str
    required: true
  root:
    description: Directory above the application's directory.
    type: path
    default: /srv
  ports:
    description: Slot name to port.
    type: dict
    default: {blue: 8001, green: 8002}
  health_path:
    description: Health URL path.
    type: str
    default: /healthz
  health_host:
    description: Host header of the health request.
    type: str
    default: localhost
author: inkdeploy
"""

RETURN = r"""
slots:
  description: Per slot (blue, green, and celery when present) version, active, healthy; the
    celery entry also has workers (unit, queue, state, release) and beat (its unit state or null).
  type: dict
  returned: always
releases:
  description: Versions fully installed on the host.
  type: list
  returned: always
"""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

try:
    from ansible.module_utils.basic import AnsibleModule
except ImportError:  # run as a payload over SSH by the orchestrator (inkdeploy/remote.py)
    AnsibleModule = None

ARGUMENT_SPEC = {
    "app": {"type": "str", "required": True},
    "root": {"type": "path", "default": "/srv"},
    "ports": {"type": "dict", "default": {"blue": 8001, "green": 8002}},
    "health_path": {"type": "str", "default": "/healthz"},
    "health_host": {"type": "str", "default": "localhost"},
}


def _active(unit):
    proc = subprocess.run(
        ["systemctl", "is-active", unit], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip()


_RELEASE_IN_PATH = re.compile(r"/releases/([^/]+)/")


def _release_of(pid):
    """The release a process was started from: its interpreter or script path under
    ROOT/APP/releases/VERSION/ (the slot link is resolved when the process starts)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    for arg in argv:
        match = _RELEASE_IN_PATH.search(arg)
        if match:
            return match.group(1)
    return None


def _celery_units(app):
    """Worker units (one per queue) with state and running release, and beat's state."""
    prefix = "%s-celery-worker@" % app
    beat = "%s-celery-beat.service" % app
    listed = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--type=service",
         prefix + "*", beat],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    units = sorted(u for u in set(listed) if u.startswith(prefix) and u.endswith(".service"))
    shown = {}
    if units or beat in listed:
        out = subprocess.run(
            ["systemctl", "show", "--property=Id,ActiveState,MainPID"] + units + [beat],
            capture_output=True, text=True, check=False,
        ).stdout
        for block in out.split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if fields.get("Id"):
                shown[fields["Id"]] = fields
    workers = []
    for unit in units:
        fields = shown.get(unit, {})
        pid = int(fields.get("MainPID") or 0)
        workers.append({
            "unit": unit,
            "queue": unit[len(prefix):-len(".service")],
            "state": fields.get("ActiveState", "unknown"),
            "release": _release_of(pid) if pid else None,
        })
    beat_state = shown.get(beat, {}).get("ActiveState") if beat in listed else None
    return workers, beat_state


def _health(port, path, host):
    request = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, path), headers={"Host": host}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            body = response.read(4096).decode(errors="replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        body = exc.read(4096).decode(errors="replace")
        status = exc.code
    except (OSError, ValueError) as exc:
        return {"status": None, "error": str(exc), "version": None}
    try:
        version = json.loads(body).get("version")
    except (ValueError, AttributeError):
        version = None
    return {
        "status": status,
        "version": version,
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
    }


def run(params):
    """The module's work (read-only); PARAMS as the argument spec describes."""
    p = dict({k: v.get("default") for k, v in ARGUMENT_SPEC.items()}, **params)
    base = os.path.join(p["root"], p["app"])
    slots = {}
    for slot in sorted(set(p["ports"]) | {"celery"}):
        link = os.path.join(base, "slots", slot)
        target = os.readlink(link) if os.path.islink(link) else None
        if slot == "celery" and target is None:
            continue
        entry = {"version": os.path.basename(target) if target else None}
        if slot == "celery":
            entry["active"] = None
            entry["workers"], entry["beat"] = _celery_units(p["app"])
        else:
            state = _active("%s@%s.service" % (p["app"], slot))
            entry["active"] = state == "active"
            entry["unit_state"] = state
            if entry["active"]:
                health = _health(int(p["ports"][slot]), p["health_path"], p["health_host"])
                entry["health"] = health
                entry["healthy"] = health["status"] == 200
            else:
                entry["healthy"] = False
        slots[slot] = entry
    releases_dir = os.path.join(base, "releases")
    releases = []
    if os.path.isdir(releases_dir):
        for name in sorted(os.listdir(releases_dir)):
            if os.path.exists(os.path.join(releases_dir, name, ".installed")):
                releases.append(name)
    return {"changed": False, "slots": slots, "releases": releases}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.exit_json(**run(module.params))


if __name__ == "__main__":
    main()
