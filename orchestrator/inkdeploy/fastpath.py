"""The fleet actions a rollback and every weight step wait for, over the SSH fast path
(inkdeploy/remote.py) instead of a playbook: read the fleet, the deploy lock, cancel a pending
slot stop, move the load balancer weights, switch and restart the Celery workers on a release
that is installed, stop a slot (now or by a timer) with Prometheus's targets, record the live
release on the hosts. Each method returns None when the fast path cannot
serve it (turned off in the policy, or a host whose connection settings need Ansible); the
caller then runs the equivalent playbook, which stays the reference implementation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.errors import InkdeployError
from inkdeploy.inventory import Environment
from inkdeploy.remote import READ_PATIENCE_S, Remote, RemoteError

__all__ = ["FastPath", "RemoteError"]

# How long `inkdeploy status` gives a load balancer to answer (a dead one costs this once).
LB_READ_TIMEOUT_S = 4.0

# Where rollout/record.yml writes the live release on a host (roles/app/tasks/follow_live.yml
# reads it), and where Prometheus reads the app slots to scrape (roles/prometheus).
LIVE_FILE = "/var/lib/inkdeploy/{app}-live.json"
APP_TARGETS_FILE = "/etc/prometheus/file_sd/app.yml"
APP_SLOT_PORTS = {"blue": 8001, "green": 8002}  # roles/prometheus: prometheus_ports.app_slots


def nice_json(value: Any) -> str:
    """What Ansible's to_nice_json writes (indent 4, sorted keys), plus the newline
    record.yml adds: the fast path and the playbook leave the same bytes."""
    return json.dumps(value, indent=4, sort_keys=True) + "\n"


def app_targets_file(
    app_hosts: tuple[str, ...],
    scrape: dict[str, list[str]],
    addresses: dict[str, str],
    ports: dict[str, int],
    default_slots: dict[str, str],
) -> str:
    """roles/prometheus/templates/app.yml.j2 as tasks_from app_targets renders it with
    prometheus_app_slots=SCRAPE: each app host's slots in SCRAPE (else its app_slot), hosts
    and slots sorted; the same bytes, so a later site.yml changes nothing."""
    lines = [
        "#",
        "# Ansible managed",
        "#",
        "# App slots that should be serving: each is scraped, and one that does not answer raises",
        "# AppSlotDown. The orchestrator rewrites this file when a rollout starts or stops a slot.",
    ]
    for host in sorted(app_hosts):
        slots = scrape[host] if host in scrape else [default_slots.get(host) or "blue"]
        for slot in sorted(slots):
            lines.append(f'- targets: ["{addresses.get(host) or host}:{ports[slot]}"]')
            lines.append(f'  labels: {{host: "{host}", slot: "{slot}"}}')
    if not app_hosts:
        lines.append("[]")
    return "\n".join(lines) + "\n"


@dataclass
class FastPath:
    remote: Remote
    app: str
    lbs: tuple[str, ...]
    app_hosts: tuple[str, ...]
    worker_hosts: tuple[str, ...]
    hostvars: dict[str, dict[str, Any]]
    enabled: bool = True
    # load balancers found silent by this command's fleet read when it may go on without them
    # (rollback, drain): weight steps leave them out; Session.read_fleet sets it
    down_lbs: frozenset[str] = frozenset()
    # worker host -> ops.workers.CeleryHost, for the Celery step ({}: the playbook does it)
    celery: dict[str, Any] = field(default_factory=dict)
    # hosts of group monitoring: Prometheus's app targets follow the slots
    monitoring: tuple[str, ...] = ()

    @property
    def live_lbs(self) -> tuple[str, ...]:
        return tuple(lb for lb in self.lbs if lb not in self.down_lbs)

    @classmethod
    def of(cls, env: Environment) -> FastPath:
        # imported here: ops.workers reaches the deploy lock through ops.held, which imports
        # the Session that builds this
        from inkdeploy.ops.workers import celery_hosts

        lbs = tuple(env.groups.get("lb", ()))
        try:
            celery = celery_hosts(env)
        except InkdeployError:  # a setting only Ansible can evaluate: the playbook does it
            celery = {}
        return cls(
            remote=Remote(env.hostvars),
            app=env.policy.app,
            lbs=lbs,
            app_hosts=tuple(env.app_hosts),
            worker_hosts=tuple(env.worker_hosts),
            hostvars=env.hostvars,
            enabled=env.policy.fast_path,
            celery=celery,
            monitoring=tuple(env.groups.get("monitoring", ())),
        )

    def serves(self, hosts: tuple[str, ...] | list[str]) -> bool:
        return self.enabled and bool(hosts) and self.remote.usable(list(hosts))

    # -- load balancers ---------------------------------------------------------------------
    def set_weights(self, weights: dict[str, int]) -> dict[str, dict[str, Any]] | None:
        """Every load balancer serves WEIGHTS ({HOST:SLOT or APP:HOST:SLOT: weight}) when this
        returns; RemoteError names the first one that refused or did not answer."""
        if not self.serves(self.live_lbs):
            return None
        params = {
            lb: {
                "weights": weights,
                "allow_empty": bool(self.hostvars.get(lb, {}).get("nginx_lb_allow_empty_upstream")),
            }
            for lb in self.live_lbs
        }
        return self.remote.payload("lb_weights", params)

    def upstreams(
        self,
        tolerate_unreachable: bool = False,
        none_may_answer: bool = False,
        timeout_s: float = LB_READ_TIMEOUT_S,
    ) -> dict[str, str | RemoteError] | None:
        """upstreams.conf of every load balancer, as nginx serves it; with
        TOLERATE_UNREACHABLE a load balancer that does not answer within TIMEOUT_S gives its
        RemoteError, and with NONE_MAY_ANSWER too (status) even when no load balancer answered."""
        if not self.serves(self.lbs):
            return None
        path = "/etc/nginx/inkdeploy/upstreams.conf"
        timeout = timeout_s if tolerate_unreachable else 10
        replies = self.remote.commands(
            {lb: ["cat", path] for lb in self.lbs}, timeout_s=timeout, patience_s=READ_PATIENCE_S
        )
        confs: dict[str, str | RemoteError] = {}
        for lb, reply in replies.items():
            if reply.rc == 0:
                confs[lb] = reply.stdout
                continue
            error = RemoteError(lb, reply.problem(), reply.unreachable)
            if not (tolerate_unreachable and reply.unreachable):
                raise error
            confs[lb] = error
        if not none_may_answer and not any(isinstance(t, str) for t in confs.values()):
            first = next(iter(confs.values()))
            raise first if isinstance(first, RemoteError) else RemoteError("lb", "no answer")
        return confs

    # -- app hosts ----------------------------------------------------------------------------
    def keep_slots(self, slots: dict[str, str]) -> bool:
        """Cancel the delayed stop of SLOTS ({host: slot}); False: run keep-slot.yml instead."""
        if not self.serves(tuple(slots)):
            return False
        argvs = {
            host: ["systemctl", "stop", f"inkdeploy-stop-{self.app}-{slot}.timer"]
            for host, slot in slots.items()
        }
        for host, reply in self.remote.commands(argvs, timeout_s=15).items():
            if reply.unreachable:
                raise RemoteError(host, reply.problem(), unreachable=True)
        return True  # like the playbook: a timer that is not there is nothing to cancel

    def slots(
        self, timeout_s: float = 15.0, hosts: tuple[str, ...] | None = None
    ) -> dict[str, dict[str, Any] | RemoteError] | None:
        """What inkdeploy_slots reports for every app and worker host (or HOSTS), or why it
        could not, each host within TIMEOUT_S."""
        hosts = hosts or tuple(dict.fromkeys(self.app_hosts + self.worker_hosts))
        if not self.serves(hosts):
            return None
        params = {}
        for host in hosts:
            hv = self.hostvars.get(host, {})
            params[host] = {
                "app": self.app,
                "ports": hv.get("app_slot_ports") or {"blue": 8001, "green": 8002},
                "health_host": hv.get("app_health_host") or "localhost",
            }
        if "{{" in str(params):  # values Ansible would template first
            return None
        return self.remote.payload_each(
            "inkdeploy_slots", params, timeout_s=timeout_s, patience_s=READ_PATIENCE_S
        )

    def _app_name(self, host: str) -> str:
        return str(self.hostvars.get(host, {}).get("app_name") or self.app)

    def stop_slots(self, arg: dict[str, Any]) -> dict[str, Any] | None:
        """rollout/stop-slot.yml: on each host of arg["slots"] ({host: slot}) cancel a pending
        stop of the slot, then stop it now or (arg["after_s"] > 0) by a transient timer that
        much later; then Prometheus's app targets become arg["scrape"] on every monitoring
        host. None, before anything is touched: the playbook must do it."""
        slots: dict[str, str] = arg["slots"]
        targets = self._targets(arg["scrape"]) if self.monitoring else None
        if (self.monitoring and targets is None) or not self.serves(tuple(slots) + self.monitoring):
            return None
        params = {
            host: {
                "unit": f"{self._app_name(host)}@{slot}.service",
                "timer": f"inkdeploy-stop-{self._app_name(host)}-{slot}",
                "after_s": int(arg.get("after_s") or 0),
            }
            for host, slot in slots.items()
        }
        if "{{" in str(params):  # an app_name Ansible would template first
            return None
        done: dict[str, Any] = {"slots": self.remote.payload("stop_slot", params, timeout_s=120)}
        if targets is not None:
            files = {"files": [{"path": APP_TARGETS_FILE, "content": targets, "mode": "0644"}]}
            done["targets"] = self.remote.payload(
                "state_files", {host: files for host in self.monitoring}, timeout_s=30
            )
        return done

    def _targets(self, scrape: dict[str, list[str]]) -> str | None:
        """The app targets file for SCRAPE, or None when a value needs Ansible's templating
        or the monitoring hosts disagree on the slots' ports."""

        def ports_of(host: str) -> dict[str, Any]:
            ports = (self.hostvars.get(host, {}).get("prometheus_ports") or {}).get("app_slots")
            return {**APP_SLOT_PORTS, **(ports or {})}

        ports = ports_of(self.monitoring[0])
        if any(ports_of(m) != ports for m in self.monitoring):
            return None
        hostvars = {h: self.hostvars.get(h, {}) for h in self.app_hosts}
        addresses = {h: str(v.get("ansible_host") or h) for h, v in hostvars.items()}
        defaults = {h: str(v.get("app_slot") or "blue") for h, v in hostvars.items()}
        if "{{" in str((ports, addresses, defaults)):
            return None
        return app_targets_file(self.app_hosts, scrape, addresses, ports, defaults)

    def record(self, arg: dict[str, Any]) -> dict[str, Any] | None:
        """rollout/record.yml: the live release and slot on each app host of arg["live"], the
        workers' release on each host of arg["workers"] (written last, as the playbook's second
        play does), in /var/lib/inkdeploy/APP-live.json. None: the playbook must do it."""
        contents = {host: nice_json(state) for host, state in arg["live"].items()}
        for host in arg.get("workers") or ():
            contents[host] = nice_json({"version": arg["version"]})
        if not self.serves(tuple(contents)):
            return None
        path = LIVE_FILE.format(app=arg["app"])
        params = {
            host: {"files": [{"path": path, "content": text, "mode": "0644"}]}
            for host, text in contents.items()
        }
        return self.remote.payload("state_files", params, timeout_s=30)

    # -- Celery workers ---------------------------------------------------------------------
    def celery_release(self, arg: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        """A rollout's Celery step: on each of arg["hosts"] in turn, point the workers' link at
        arg["version"] (payload celery_switch, which prunes old releases as the role does) and
        restart them as `inkdeploy workers restart` does: a warm shutdown, then every queue's
        worker answers a ping through the broker before the next host is touched. Returns
        host -> what was done. None, before any host is touched: the playbook must do it (a
        host without a fast path, or without the release installed: it installs it). A host
        whose workers do not come back raises RemoteError and the hosts after it are left
        alone, as celery.yml's serial 1 and max_fail_percentage 0 do."""
        from inkdeploy.ops.workers import HostStep, restart_host  # see of()

        version, hosts = str(arg["version"]), tuple(arg["hosts"])
        if not self.serves(hosts) or any(h not in self.celery for h in hosts):
            return None
        marks = {h: ["test", "-f", f"{self.celery[h].home}/releases/{version}/.installed"]
                 for h in hosts}  # fmt: skip
        for host, reply in self.remote.commands(marks, timeout_s=15).items():
            if reply.unreachable:
                raise RemoteError(host, reply.problem(), unreachable=True)
            if reply.rc != 0:
                return None
        by = os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"
        done: dict[str, dict[str, Any]] = {}
        for host in hosts:
            celery = self.celery[host]
            params = {
                "root": celery.app_root, "app": celery.app_name, "version": version,
                "keep": celery.keep_releases, "keep_versions": list(arg.get("keep") or []),
                "release_log": f"{celery.log_dir}/releases.log", "by": by,
            }  # fmt: skip
            switched = self.remote.payload("celery_switch", {host: params}, timeout_s=60)[host]
            if not switched.get("installed"):
                raise RemoteError(host, f"release {version} is no longer installed", refused=True)
            step = HostStep(host, celery.queues, celery.units, celery.runs_beat)
            restarted = restart_host(self.remote, celery, step, float(celery.ping_retries))
            if restarted.state != "restarted":
                raise RemoteError(
                    host, f"the workers did not come back on {version}: {restarted.problem}",
                    refused=True,
                )  # fmt: skip
            done[host] = {
                "switched": switched.get("switched"), "previous": switched.get("previous"),
                "pruned": switched.get("pruned"), "stop_s": restarted.stop_s,
                "ping_s": restarted.ping_s, "seconds": restarted.seconds,
            }  # fmt: skip
        return done

    # -- the deploy lock ----------------------------------------------------------------------
    def lock_each(
        self, hosts: tuple[str, ...], args: dict[str, Any], timeout_s: float
    ) -> dict[str, dict[str, Any] | RemoteError] | None:
        """The lock module's answer on each of HOSTS at once, or why it gave none. A query
        (it only reads) is asked again of a host that is slow but alive (remote.READ_PATIENCE_S);
        a change never is: the attempt that timed out may have been carried out."""
        if not self.serves(hosts):
            return None
        reads = args.get("state") == "query" and not args.get("record")
        patience = READ_PATIENCE_S if reads else 0.0
        return self.remote.payload_each(
            "inkdeploy_lock", dict.fromkeys(hosts, args), timeout_s, patience_s=patience
        )
