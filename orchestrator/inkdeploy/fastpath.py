"""The fleet actions a rollback and every weight step wait for, over the SSH fast path
(inkdeploy/remote.py) instead of a playbook: read the fleet, the deploy lock, cancel a pending
slot stop, move the load balancer weights. Each method returns None when the fast path cannot
serve it (turned off in the policy, or a host whose connection settings need Ansible); the
caller then runs the equivalent playbook, which stays the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inkdeploy.inventory import Environment
from inkdeploy.remote import Remote, RemoteError

__all__ = ["FastPath", "RemoteError"]


@dataclass
class FastPath:
    remote: Remote
    app: str
    lbs: tuple[str, ...]
    lock_host: str | None
    app_hosts: tuple[str, ...]
    worker_hosts: tuple[str, ...]
    hostvars: dict[str, dict[str, Any]]
    enabled: bool = True

    @classmethod
    def of(cls, env: Environment) -> FastPath:
        lbs = tuple(env.groups.get("lb", ()))
        first = env.hostvars.get(lbs[0], {}) if lbs else {}
        lock_host = first.get("rollout_lock_host") or (lbs[0] if lbs else None)
        return cls(
            remote=Remote(env.hostvars),
            app=env.policy.app,
            lbs=lbs,
            lock_host=str(lock_host) if lock_host else None,
            app_hosts=tuple(env.app_hosts),
            worker_hosts=tuple(env.worker_hosts),
            hostvars=env.hostvars,
            enabled=env.policy.fast_path,
        )

    def _serves(self, hosts: tuple[str, ...] | list[str]) -> bool:
        return self.enabled and bool(hosts) and self.remote.usable(list(hosts))

    # -- load balancers ---------------------------------------------------------------------
    def set_weights(self, weights: dict[str, int]) -> dict[str, dict[str, Any]] | None:
        """Every load balancer serves WEIGHTS ({HOST:SLOT or APP:HOST:SLOT: weight}) when this
        returns; RemoteError names the first one that refused or did not answer."""
        if not self._serves(self.lbs):
            return None
        params = {
            lb: {
                "weights": weights,
                "allow_empty": bool(self.hostvars.get(lb, {}).get("nginx_lb_allow_empty_upstream")),
            }
            for lb in self.lbs
        }
        return self.remote.payload("lb_weights", params)

    def upstreams(self) -> dict[str, str] | None:
        """upstreams.conf of every load balancer, as nginx serves it."""
        if not self._serves(self.lbs):
            return None
        path = "/etc/nginx/inkdeploy/upstreams.conf"
        replies = self.remote.commands({lb: ["cat", path] for lb in self.lbs}, timeout_s=10)
        for lb, reply in replies.items():
            if reply.rc != 0:
                raise RemoteError(lb, reply.problem(), reply.unreachable)
        return {lb: reply.stdout for lb, reply in replies.items()}

    # -- app hosts ----------------------------------------------------------------------------
    def keep_slots(self, slots: dict[str, str]) -> bool:
        """Cancel the delayed stop of SLOTS ({host: slot}); False: run keep-slot.yml instead."""
        if not self._serves(tuple(slots)):
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
        if not self._serves(hosts):
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
        return self.remote.payload_each("inkdeploy_slots", params, timeout_s=timeout_s)

    # -- the deploy lock ----------------------------------------------------------------------
    def lock(self, args: dict[str, Any]) -> dict[str, Any] | None:
        if not self.lock_host or not self._serves((self.lock_host,)):
            return None
        result = self.remote.payload("inkdeploy_lock", {self.lock_host: args}, timeout_s=20)
        return result[self.lock_host]
