"""A fleet in memory for the orchestrator's commands (deploy.rollout, resume, rollback) without
hosts: a stand-in for the Runner that applies each playbook the way the real one changes the
fleet (slots, weights, workers, installed releases), with the real deploy lock module on a
temporary directory, and a real HTTP health endpoint per slot on 127.0.0.1 for the HTTP gate.

A test changes the fleet mid-command through `on_call` (called before each playbook) and reads
`calls` afterwards: which playbooks ran, in which order, with which extra vars."""

from __future__ import annotations

import base64
import copy
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from inkdeploy.build.artifact import Manifest
from inkdeploy.runner import PlaybookResult, TaskFailure

from .loopback import LoopbackServer
from .test_lock import lock_module

APP = "inkapp"
V1, V2 = "1.0.0", "2.0.0"


@dataclass
class Call:
    playbook: str
    extravars: dict[str, Any]


@dataclass
class FleetState:
    slots: dict[str, dict[str, dict[str, Any]]]  # host -> slot -> {version, active}
    releases: dict[str, set[str]]
    weights: dict[str, dict[str, int]]  # load balancer -> "host:slot" -> weight
    workers: dict[str, str]
    recorded: dict[str, Any] = field(default_factory=dict)


class FakeFleet:
    def __init__(
        self,
        root: Path,
        hosts: tuple[str, ...] = ("app1", "app2"),
        lbs: tuple[str, ...] = ("lb1",),
    ) -> None:
        self.root = root
        self.hosts = hosts
        self.lbs = lbs
        # load balancers whose weights reload fails (the others apply it)
        self.broken_lbs: set[str] = set()
        self.lockdir = root / "lockhost"
        self.lockdir.mkdir(parents=True, exist_ok=True)
        self.state = FleetState(
            slots={h: {"blue": {"version": V1, "active": True},
                       "green": {"version": None, "active": False}} for h in hosts},
            releases={h: {V1} for h in hosts},
            weights={lb: {f"{h}:{s}": 100 if s == "blue" else 0 for h in hosts
                          for s in ("blue", "green")} for lb in lbs},
            workers={"worker1": V1},
        )  # fmt: skip
        self.calls: list[Call] = []
        self.on_call: Callable[[Call], None] | None = None
        self.servers: dict[tuple[str, str], LoopbackServer] = {}
        for host in hosts:
            for slot in ("blue", "green"):
                self.servers[(host, slot)] = LoopbackServer(self._handler(host, slot))
        # what the pre-flight connects to as the load balancer's HTTPS port
        self.lb = LoopbackServer(self._handler(hosts[0], "blue"))

    # -- the environment ---------------------------------------------------------------------
    def inventory(self, policy: dict[str, Any] | None = None) -> Path:
        """hosts.yml for this fleet: app hosts on 127.0.0.1 with their slots' health ports."""
        inv = self.root / "inventory"
        (inv / "group_vars").mkdir(parents=True, exist_ok=True)
        hosts = {
            h: {"ansible_host": "127.0.0.1", "app_slot_ports": {
                s: self.servers[(h, s)].port for s in ("blue", "green")}}
            for h in self.hosts
        }  # fmt: skip
        lbs = {lb: {"ansible_host": "127.0.0.1"} for lb in self.lbs}
        data = {"all": {"children": {
            "app": {"hosts": hosts}, "lb": {"hosts": lbs},
            "worker": {"hosts": {"worker1": {"ansible_host": "127.0.0.1"}}},
        }}}  # fmt: skip
        (inv / "hosts.yml").write_text(yaml.safe_dump(data))
        rollout = {
            "strategy": "canary",
            "migrate": False,
            "canary": {"hosts": 1, "steps": [10, 100], "analysis_s": 0, "stop_old_after_s": 0},
            "blue_green": {"bake_s": 0, "stop_old_after_s": 0},
            "judge": {"enabled": False},
            "prometheus_gates": [],
            "http_gate": {"retries": 2, "interval_s": 0.05, "timeout_s": 2},
            "lock_lease_s": 10,
            # the playbooks, which this fake applies; the SSH fast path runs on the lab
            # (tests/stack) and its parts in test_fastpath.py
            "fast_path": False,
            **(policy or {}),
        }
        (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({"inkdeploy_rollout": rollout}))
        return inv / "hosts.yml"

    def artifact(self, version: str = V2) -> Path:
        """A file that check_artifact accepts for VERSION: only its manifest is read (the
        stand-in runner installs nothing)."""
        manifest = Manifest(
            name=APP, version=version, built_at="2026-12-03T00:00:00Z", python="3.11.2",
            project_settings="inkapp.settings", wsgi="inkapp.wsgi:application",
            requirement=APP, wheels={},
        )  # fmt: skip
        top = self.root / "build" / f"{APP}-{version}"
        top.mkdir(parents=True, exist_ok=True)
        (top / "manifest.json").write_text(manifest.model_dump_json())
        path = self.root / "dist" / f"{APP}-{version}.tar.gz"
        path.parent.mkdir(exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(top, arcname=top.name)
        return path

    def __enter__(self) -> FakeFleet:
        for server in [*self.servers.values(), self.lb]:
            server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in [*self.servers.values(), self.lb]:
            server.__exit__()

    def _handler(self, host: str, slot: str) -> type[BaseHTTPRequestHandler]:
        fleet = self

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                info = fleet.state.slots[host][slot]
                ok = bool(info["active"])
                body = json.dumps({"version": info["version"]}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Health

    # -- what a test looks at ----------------------------------------------------------------
    def snapshot(self) -> FleetState:
        return copy.deepcopy(self.state)

    def restore(self, state: FleetState) -> None:
        self.state = copy.deepcopy(state)

    def serving(self, lb: str = "lb1") -> dict[str, int]:
        """Release -> summed weight of the running slots that LB sends traffic to."""
        result: dict[str, int] = {}
        for key, weight in self.state.weights[lb].items():
            host, slot = key.split(":")
            info = self.state.slots[host][slot]
            if weight > 0:
                version = info["version"] if info["active"] else "STOPPED"
                result[version] = result.get(version, 0) + weight
        return result

    def lock(self, **args: Any) -> dict[str, Any]:
        return lock_module(self.lockdir, **args)

    def playbooks(self) -> list[str]:
        return [c.playbook for c in self.calls]

    # -- the Runner's interface --------------------------------------------------------------
    def runner(self, inventory: Path, progress: Any = None, cancel: Any = None) -> FakeRunner:
        return FakeRunner(self)


class FakeRunner:
    def __init__(self, fleet: FakeFleet) -> None:
        self.fleet = fleet
        self.lock_owner = ""

    def run(
        self,
        playbook: str,
        extravars: dict[str, Any] | None = None,
        collect: tuple[str, ...] = (),
        timeout: int = 3600,
    ) -> PlaybookResult:
        f = self.fleet
        extra = dict(extravars or {})
        if self.lock_owner:
            extra["inkdeploy_lock_owner"] = self.lock_owner
        call = Call(playbook, extra)
        if f.on_call:
            f.on_call(call)
        f.calls.append(call)
        result = PlaybookResult(playbook, rc=0, status="successful", seconds=0.0)
        refused = self._lock_check(playbook, extra)
        if refused:
            result.rc = 2
            result.failures.append(TaskFailure("lb1", "Refuse while another holds it", refused))
            return result
        s = f.state
        if playbook == "rollout/facts.yml":
            result.results = self._facts()
        elif playbook == "rollout/lock.yml":
            args = {k: v for k, v in extra["rollout_lock"].items() if k != "name"}
            result.results = {"Lock and history": {"lb1": f.lock(**args)}}
        elif playbook == "lb-weights.yml":
            for lb in f.lbs:
                if lb in f.broken_lbs:
                    result.rc = 2
                    result.failures.append(TaskFailure(lb, "Check the configuration", "nginx -t"))
                else:
                    s.weights[lb] = {k: int(v) for k, v in extra["nginx_lb_slot_weights"].items()}
        elif playbook == "rollout/install.yml":
            for host in extra["rollout_hosts"].split(","):  # app hosts and worker hosts
                s.releases.setdefault(host, set()).add(extra["app_version"])
        elif playbook == "rollout/start-slot.yml":
            for host, slot in extra["rollout_slots"].items():
                s.slots[host][slot] = {"version": extra["app_version"], "active": True}
                s.releases[host].add(extra["app_version"])
        elif playbook == "rollout/stop-slot.yml":
            for host, slot in extra["rollout_slots"].items():
                s.slots[host][slot]["active"] = False
        elif playbook == "rollout/record.yml":
            s.recorded = {"live": extra["rollout_live"], "version": extra["rollout_version"]}
        elif playbook == "celery.yml":
            s.workers = {w: extra["app_version"] for w in s.workers}
        elif playbook == "rollout/keep-slot.yml":
            pass
        else:  # pragma: no cover - a playbook this stand-in does not know
            pytest.fail(f"unexpected playbook {playbook}")
        return result

    def _lock_check(self, playbook: str, extra: dict[str, Any]) -> str:
        """What playbooks/rollout/lock-check.yml does in lb-weights.yml and celery.yml."""
        if playbook not in {"lb-weights.yml", "celery.yml"}:
            return ""
        holder = self.fleet.lock(state="query", history_lines=0)["holder"]
        if (
            holder
            and not holder.get("expired")
            and holder.get("rollout") != extra.get("inkdeploy_lock_owner", "")
        ):
            return f"The deploy lock is held by {holder.get('user')}; nothing was changed."
        return ""

    def _facts(self) -> dict[str, dict[str, dict[str, Any]]]:
        s = self.fleet.state
        slots: dict[str, dict[str, Any]] = {}
        for host, per in s.slots.items():
            entry = {}
            for slot, info in per.items():
                entry[slot] = {
                    "version": info["version"],
                    "active": info["active"],
                    "healthy": info["active"],
                    "health": {"status": 200 if info["active"] else None,
                               "version": info["version"]},
                }  # fmt: skip
            slots[host] = {"slots": entry, "releases": sorted(s.releases[host])}
        for worker, version in s.workers.items():
            slots[worker] = {"slots": {"celery": {"version": version}}, "releases": [version]}
        confs = {}
        for lb, weights in s.weights.items():
            line = json.dumps({f"{APP}:{k}": v for k, v in weights.items()}, sort_keys=True)
            conf = f"# inkdeploy-weights: {line}\n".encode()
            confs[lb] = {"content": base64.b64encode(conf).decode()}
        return {
            "Read the slots": slots,
            "Read the weights nginx serves": confs,
            "Read the deploy lock": {"lb1": self.fleet.lock(state="query", history_lines=500)},
        }
