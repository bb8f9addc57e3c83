"""`inkdeploy workers restart`: restart the Celery workers one host at a time, the way the
celery role does on a deploy, and say how long each took.

Each worker stops with a warm shutdown (TERM: no new tasks, running ones finish, for up to the
role's celery_stop_timeout), starts again, and must answer a ping through the broker for its
node (`celery inspect ping --destination QUEUE@HOST`, as the role checks it) before the next
host is touched; the other hosts keep serving the queues meanwhile. The first host that fails
stops the command, naming the hosts restarted and those left alone.

The decisions (which hosts and units, in inventory order) are pure functions here; the side
effects are one SSH command per host (RESTART_SCRIPT, run with the release's own Python so the
app's Celery configuration is the workers'). Under the deploy lock when the inventory has one
(ops/held.py), so no deploy restarts the same workers meanwhile.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import yaml

from inkdeploy.errors import InkdeployError
from inkdeploy.inventory import ConfigError, Environment
from inkdeploy.ops.held import held, lock_state
from inkdeploy.preflight import truthy
from inkdeploy.remote import Remote
from inkdeploy.runner import PROJECT

ROLES = PROJECT / "roles"
# Seconds between two pings while a worker starts (the role waits 1 s between its tries).
PING_INTERVAL_S = 0.25


class WorkersRefused(ConfigError):
    """The restart cannot be done as asked; nothing was restarted."""


class WorkersFailed(InkdeployError):
    """A host's workers did not come back; the hosts after it were left alone."""


@dataclass(frozen=True)
class CeleryHost:
    """What the celery role set up on one host (inventory values over the role's defaults)."""

    queues: tuple[str, ...]
    app_name: str = "inkapp"
    app_root: str = "/srv"
    app_module: str = "inkapp.celery_app"
    stop_timeout_s: float = 300
    ping_retries: int = 30
    runs_beat: bool = False
    keep_releases: int = 3  # app_keep_releases: the prune after a release switch
    log_dir: str = "/var/log/inkapp"  # app_log_dir: releases.log

    @property
    def units(self) -> tuple[str, ...]:
        """What a release switch restarts here: every worker, and beat where it runs."""
        beat = (self.beat_unit,) if self.runs_beat else ()
        return (*(self.worker_unit(q) for q in self.queues), *beat)

    @property
    def home(self) -> str:
        return f"{self.app_root}/{self.app_name}"

    def worker_unit(self, queue: str) -> str:
        return f"{self.app_name}-celery-worker@{queue}.service"

    @property
    def beat_unit(self) -> str:
        return f"{self.app_name}-celery-beat.service"


@dataclass(frozen=True)
class HostStep:
    host: str
    queues: tuple[str, ...]
    units: tuple[str, ...]  # worker units, then beat's when it is restarted here
    beat: bool


@dataclass(frozen=True)
class RestartPlan:
    steps: tuple[HostStep, ...]
    skipped: dict[str, str]  # worker host -> why it is left alone

    @property
    def hosts(self) -> list[str]:
        return [s.host for s in self.steps]


@dataclass
class HostRestart:
    host: str
    units: list[str]
    nodes: list[str] = field(default_factory=list)  # QUEUE@HOSTNAME, as Celery names them
    state: str = "not restarted"  # restarted | failed | not restarted
    # wall clock (epoch seconds) when the restart began and when the last ping answered
    began_at: float | None = None
    ended_at: float | None = None
    # seconds from TERM to the old worker gone (warm shutdown), the slowest unit of the host
    stop_s: float | None = None
    # seconds from the new worker's start until it answered a ping (the slowest queue)
    ping_s: float | None = None
    stop_by_unit: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None  # the host's whole turn, as the controller saw it
    beat_restarted: bool = False
    problem: str = ""


@dataclass
class WorkersResult:
    action: str
    dry_run: bool
    hosts: list[HostRestart]
    skipped: dict[str, str]
    lock: str = ""  # held | none in this inventory | skipped (--no-lock)
    seconds: float = 0.0
    message: str = ""

    @property
    def restarted(self) -> list[str]:
        return [h.host for h in self.hosts if h.state == "restarted"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "restarted": self.restarted}


# -- what the inventory and the role say ------------------------------------------------------


@cache
def _role_defaults(role: str) -> dict[str, Any]:
    path = ROLES / role / "defaults" / "main.yml"
    return dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _render(value: Any, names: dict[str, Any], what: str) -> str:
    """A value that may be the role's simple template ("{{ app_name }}.celery_app")."""
    text = re.sub(
        r"\{\{\s*(\w+)\s*\}\}",
        lambda m: str(names.get(m.group(1), m.group(0))),
        str(value),
    )
    if "{{" in text or "{%" in text:
        raise WorkersRefused(
            f"{what} is a template this command cannot evaluate ({value}); set it to a plain "
            "value in the inventory."
        )
    return text


def celery_host(env: Environment, host: str) -> CeleryHost:
    hv = {**_role_defaults("app"), **_role_defaults("celery"), **env.hostvars.get(host, {})}
    app_name = _render(hv.get("app_name", "inkapp"), hv, "app_name")
    names = {**hv, "app_name": app_name}
    queues = tuple(str(q["name"]) for q in hv.get("celery_queues") or [] if q.get("name"))
    beat_group = str(hv.get("celery_beat_group", "celery_beat"))

    def value(name: str, default: Any) -> str:
        return _render(hv.get(name, default), names, name)

    return CeleryHost(
        queues=queues,
        app_name=app_name,
        app_root=value("app_root", "/srv"),
        app_module=value("celery_app_module", "{{ app_name }}.celery_app"),
        stop_timeout_s=float(value("celery_stop_timeout", 300)),
        ping_retries=int(value("celery_ping_retries", 30)),
        runs_beat=truthy(hv.get("celery_beat_enabled", True))
        and host in env.groups.get(beat_group, []),
        keep_releases=int(value("app_keep_releases", 3)),
        log_dir=value("app_log_dir", "/var/log/{{ app_name }}"),
    )


def celery_hosts(env: Environment) -> dict[str, CeleryHost]:
    """Group worker in inventory order, then a beat host outside it."""
    hosts = list(env.groups.get("worker", []))
    hosts += [h for h in env.groups.get("celery_beat", []) if h not in hosts]
    return {h: celery_host(env, h) for h in hosts}


# -- the plan (pure) --------------------------------------------------------------------------


def plan_restart(
    fleet: dict[str, CeleryHost],
    *,
    queues: list[str] | None = None,
    hosts: list[str] | None = None,
    beat: bool = False,
    worker_hosts: list[str] | None = None,
) -> RestartPlan:
    """Which units to restart on which host, one host at a time in inventory order. FLEET:
    celery_hosts(); WORKER_HOSTS: the hosts of group worker (default: all of FLEET)."""
    workers = [h for h in (worker_hosts if worker_hosts is not None else list(fleet)) if h in fleet]
    if not workers:
        raise WorkersRefused(
            "The inventory has no host in group worker; pass the inventory of the environment "
            "whose Celery workers you mean."
        )
    for host in hosts or []:
        if host not in fleet:
            raise WorkersRefused(
                f"{host} is not a worker host of this inventory ({', '.join(fleet)}); "
                "name one of those."
            )
    known = sorted({q for h in workers for q in fleet[h].queues})
    for queue in queues or []:
        if queue not in known:
            raise WorkersRefused(
                f'No worker serves queue "{queue}" in this inventory (queues: '
                f"{', '.join(known) or 'none'}); name one of those."
            )
    steps: list[HostStep] = []
    skipped: dict[str, str] = {}
    for host in fleet:
        celery = fleet[host]
        is_worker = host in workers
        if hosts and host not in hosts:
            if is_worker:
                skipped[host] = "not named with --host"
            continue
        chosen = tuple(q for q in celery.queues if not queues or q in queues) if is_worker else ()
        with_beat = beat and celery.runs_beat
        if queues and is_worker and not chosen and not with_beat:
            if hosts:
                raise WorkersRefused(
                    f"{host} serves no queue named ({', '.join(queues)}); it serves "
                    f"{', '.join(celery.queues) or 'none'}."
                )
            skipped[host] = f"serves none of {', '.join(queues)}"
            continue
        if not chosen and not with_beat:
            if is_worker:
                skipped[host] = "no queue in celery_queues"
            continue
        units = tuple(celery.worker_unit(q) for q in chosen)
        steps.append(HostStep(host, chosen, units + ((celery.beat_unit,) if with_beat else ()),
                              with_beat))  # fmt: skip
    if beat and not any(s.beat for s in steps):
        raise WorkersRefused(
            "--beat was given but beat runs on none of the hosts chosen (group celery_beat); "
            "leave out --host, or name the beat host."
        )
    if not steps:
        raise WorkersRefused(
            f"Nothing to restart on {', '.join(hosts or fleet)}: no worker queue there "
            "(beat is restarted only with --beat)."
        )
    return RestartPlan(tuple(steps), skipped)


def refuse_unanswered(plan: RestartPlan, problems: dict[str, str]) -> None:
    """Refuse the whole restart when a planned host cannot be reached (host -> why)."""
    down = {h: problems[h] for h in plan.hosts if h in problems}
    if not down:
        return
    others = [h for h in plan.hosts if h not in down]
    what = "; ".join(f"{h} {why}" for h, why in down.items())
    hint = (
        f"restart the others with {' '.join(f'--host {h}' for h in others)}"
        if others
        else "bring it back (or mend SSH to it) first"
    )
    raise WorkersRefused(f"Nothing was restarted: {what}; {hint}.")


def summary(result: WorkersResult) -> str:
    if result.dry_run:
        if not result.hosts:
            return "Nothing to restart."
        return "Would restart, one host at a time: " + "; ".join(
            f"{h.host} ({', '.join(h.units)})" for h in result.hosts
        ) + "."  # fmt: skip
    figures = ", ".join(
        f"{h.host} stop {_s(h.stop_s)} + ping {_s(h.ping_s)}" for h in result.hosts
        if h.state == "restarted"
    )  # fmt: skip
    beat = next((h.host for h in result.hosts if h.beat_restarted), None)
    tail = f"; beat restarted on {beat} (harmless: it only schedules)" if beat else ""
    return (
        f"Restarted the workers on {', '.join(result.restarted)} one host at a time in "
        f"{result.seconds:.1f} s ({figures}){tail}."
    )


def _s(seconds: float | None) -> str:
    """Seconds for a message; "-" when not seen (a unit that was not running has no stop)."""
    return "-" if seconds is None else f"{seconds:.1f} s"


# -- side effects -----------------------------------------------------------------------------

# Runs on the worker host as root with the release's Python: load the app's environment file
# and Celery app, restart the units (systemctl waits for the warm shutdown), read systemd's
# timestamps of the stop and the start, then ping each queue's node until it answers. Prints one
# JSON object. Clocks: systemd's monotonic timestamps and time.monotonic() are the same clock.
RESTART_SCRIPT = r"""
import json, os, socket, subprocess, sys, time

p = json.load(sys.stdin)
out = {"hostname": socket.gethostname()}


def finish(**values):
    out.update(values)
    json.dump(out, sys.stdout)
    sys.exit(0)


def show(units):
    props = ("ActiveState,ActiveExitTimestampMonotonic,InactiveEnterTimestampMonotonic,"
             "InactiveExitTimestampMonotonic")
    text = subprocess.run(["systemctl", "show", "-p", props, *units], capture_output=True,
                          text=True, check=True).stdout
    blocks = [b for b in text.strip().split("\n\n")]
    found = {}
    for unit, block in zip(units, blocks):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        found[unit] = values
    return found


for line in open(p["env_file"]):
    key, sep, value = line.rstrip("\n").partition("=")
    if sep and not key.lstrip().startswith("#"):
        os.environ[key.strip()] = value
from celery.app.utils import find_app

app = find_app(p["app"])
before = show(p["units"])
out["began_at"] = time.time()
began = time.monotonic()
proc = subprocess.run(["systemctl", "restart", *p["units"]], capture_output=True, text=True)
out["restart_s"] = round(time.monotonic() - began, 2)
if proc.returncode != 0:
    finish(error="systemctl restart failed: " + (proc.stderr.strip() or f"exit {proc.returncode}"))
after = show(p["units"])
stops, starts = {}, {}
for unit in p["units"]:
    b, a = before[unit], after[unit]
    start = int(a.get("InactiveExitTimestampMonotonic") or 0)
    if start <= int(b.get("InactiveExitTimestampMonotonic") or 0):
        finish(error=f"{unit} did not start again (state {a.get('ActiveState')})")
    starts[unit] = start / 1e6
    exit_, inactive = int(a.get("ActiveExitTimestampMonotonic") or 0), int(
        a.get("InactiveEnterTimestampMonotonic") or 0)
    if b.get("ActiveState") == "active" and inactive >= exit_ > 0:
        stops[unit] = round((inactive - exit_) / 1e6, 2)
out["stop_s"] = stops
want = {f"{q}@{out['hostname']}": p["worker_units"][i] for i, q in enumerate(p["queues"])}
answered, last_error, tries = {}, "", 0
deadline = time.monotonic() + p["wait_s"]
while want.keys() - answered.keys():
    tries += 1
    try:
        replies = app.control.ping(destination=sorted(want.keys() - answered.keys()),
                                   timeout=p["ping_timeout_s"])
    except Exception as exc:
        replies, last_error = [], f"{type(exc).__name__}: {exc}"
    now = time.monotonic()
    for reply in replies or []:
        for node in reply:
            if node in want and node not in answered:
                answered[node] = round(now - starts[want[node]], 2)
    if time.monotonic() >= deadline:
        break
    if want.keys() - answered.keys():
        time.sleep(p["interval_s"])
states = show(p["units"])
out.update(
    nodes=sorted(want), ping_s=answered, tries=tries, ended_at=time.time(),
    active={u: states[u].get("ActiveState") for u in p["units"]},
)
missing = sorted(want.keys() - answered.keys())
if missing:
    finish(error=f"no ping answer from {', '.join(missing)} within {p['wait_s']:.0f} s"
           + (f" (last error: {last_error})" if last_error else ""))
inactive = [u for u, s in out["active"].items() if s != "active"]
if inactive:
    finish(error=f"{', '.join(inactive)} not active after the restart")
finish()
"""


def _params(celery: CeleryHost, step: HostStep, wait_s: float) -> dict[str, Any]:
    return {
        "env_file": f"/etc/{celery.app_name}/env",
        "app": celery.app_module,
        "units": list(step.units),
        "queues": list(step.queues),
        "worker_units": [celery.worker_unit(q) for q in step.queues],
        "wait_s": wait_s,
        "ping_timeout_s": 1.0,
        "interval_s": PING_INTERVAL_S,
    }


def _python(celery: CeleryHost) -> str:
    return f"{celery.home}/slots/celery/venv/bin/python"


def check_reachable(remote: Remote, plan: RestartPlan, fleet: dict[str, CeleryHost]) -> None:
    """Every planned host answers over SSH and has the release's Python, before any restart."""
    problems = {h: "has no fast path (its connection settings need Ansible)"
                for h in plan.hosts if not remote.usable([h])}  # fmt: skip
    argvs = {h: ["test", "-x", _python(fleet[h])] for h in plan.hosts if h not in problems}
    for host, reply in remote.commands(argvs, timeout_s=15).items():
        if reply.unreachable:
            problems[host] = reply.problem()
        elif reply.rc != 0:
            problems[host] = f"has no Celery release ({_python(fleet[host])} is missing)"
    refuse_unanswered(plan, problems)


def restart_host(remote: Remote, celery: CeleryHost, step: HostStep, wait_s: float) -> HostRestart:
    result = HostRestart(step.host, list(step.units))
    began = time.monotonic()
    timeout = celery.stop_timeout_s * max(1, len(step.units)) + wait_s + 60
    reply = remote.command(
        step.host,
        [_python(celery), "-c", RESTART_SCRIPT],
        stdin=json.dumps(_params(celery, step, wait_s)),
        timeout_s=timeout,
    )
    result.seconds = round(time.monotonic() - began, 2)
    if reply.rc != 0:
        result.state = "failed"
        result.problem = reply.problem()
        return result
    try:
        said: dict[str, Any] = json.loads(reply.stdout)
    except ValueError:
        result.state = "failed"
        result.problem = f"the restart script answered no JSON: {reply.stdout[-200:]!r}"
        return result
    result.nodes = list(said.get("nodes", []))
    result.began_at = said.get("began_at")
    result.ended_at = said.get("ended_at")
    stops = dict(said.get("stop_s") or {})
    pings = dict(said.get("ping_s") or {})
    result.stop_by_unit = stops
    result.stop_s = max(stops.values()) if stops else None
    result.ping_s = max(pings.values()) if pings else None
    result.beat_restarted = step.beat and not said.get("error")
    result.problem = str(said.get("error") or "")
    result.state = "failed" if result.problem else "restarted"
    return result


def _execute(
    env: Environment,
    plan: RestartPlan,
    fleet: dict[str, CeleryHost],
    wait_s: float | None,
    lock: str,
    began: float,
) -> WorkersResult:
    remote = Remote(env.hostvars)
    check_reachable(remote, plan, fleet)
    result = WorkersResult("restart", False, [], plan.skipped, lock=lock)
    for step in plan.steps:
        celery = fleet[step.host]
        host_wait = wait_s if wait_s is not None else float(celery.ping_retries)
        done = restart_host(remote, celery, step, host_wait)
        result.hosts.append(done)
        if done.state != "restarted":
            result.hosts += [HostRestart(s.host, list(s.units)) for s in plan.steps
                             if s.host not in {h.host for h in result.hosts}]  # fmt: skip
            result.seconds = round(time.monotonic() - began, 2)
            before = result.restarted
            left = [h.host for h in result.hosts if h.state == "not restarted"]
            raise WorkersFailed(
                f"The workers on {step.host} did not come back: {done.problem}. Restarted "
                f"before it: {', '.join(before) or 'none'}; not restarted: "
                f"{', '.join(left) or 'none'}. Look at `journalctl -u "
                f"{step.units[0]}` on {step.host}, then rerun with --host for the rest.",
                detail=json.dumps(result.to_dict(), default=str),
            )
    result.seconds = round(time.monotonic() - began, 2)
    result.message = summary(result)
    return result


def restart_workers(
    env: Environment,
    *,
    queues: list[str] | None = None,
    hosts: list[str] | None = None,
    beat: bool = False,
    dry_run: bool = False,
    no_lock: bool = False,
    wait_s: float | None = None,
    message: str = "",
) -> WorkersResult:
    began = time.monotonic()
    fleet = celery_hosts(env)
    plan = plan_restart(fleet, queues=queues, hosts=hosts, beat=beat,
                        worker_hosts=env.groups.get("worker", []))  # fmt: skip
    if dry_run:
        check_reachable(Remote(env.hostvars), plan, fleet)
        result = WorkersResult("restart", True, [HostRestart(s.host, list(s.units))
                                                 for s in plan.steps], plan.skipped)  # fmt: skip
        result.lock = "" if lock_state(env, no_lock) != "held" else "would be taken"
        result.message = summary(result)
        return result
    reason = message or f"restart the workers on {', '.join(plan.hosts)}"
    with held(env, "workers-restart", reason, ",".join(plan.hosts), no_lock=no_lock) as lock:
        return _execute(env, plan, fleet, wait_s, lock.lock, began)
