"""Pre-flight before a rollout: is the fleet healthy enough that a failing gate would mean the
release, and not the database, the broker or a load balancer?

Read-only probes from the controller, all at once (one thread each) and each with a short
timeout, so a dead host costs the timeout once, not once per host:

- Patroni: GET /cluster (and GET /config, for synchronous_mode) on every host of group db;
- Sentinel: SENTINEL get-master-addr-by-name on every host of group sentinel;
- Prometheus: GET /api/v1/alerts, firing alerts of severity critical;
- load balancers: a TCP connection to port 443 of every host of group lb.

The probes only observe (``Observation``); ``evaluate`` and the ``evaluate_*`` functions are pure
and turn observations into checks and problems, one sentence each, naming host and what was seen.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from inkdeploy import pki
from inkdeploy.inventory import Environment
from inkdeploy.lab.layout import LAB_NAME_RE, LabLayout
from inkdeploy.runner import PROJECT

__all__ = [
    "Check",
    "Observation",
    "Observations",
    "Preflight",
    "evaluate",
    "evaluate_alerts",
    "evaluate_lbs",
    "evaluate_patroni",
    "evaluate_sentinels",
    "run_preflight",
]

# nginx_lb listens on 443 (templates/etc/nginx/inkdeploy/servers.conf.j2 has no variable for it).
LB_HTTPS_PORT = 443
PATRONI_PORT = 8008  # roles/patroni: patroni_restapi_port
SENTINEL_PORT = 26379  # roles/redis_sentinel: redis_sentinel_port
SENTINEL_MASTER = "inkdeploy"  # roles/redis_sentinel: redis_sentinel_master_name
# what a plain client of a TLS-only sentinel is told to do (roles/redis: redis_tls)
TLS_HINT = "set redis_tls: true in the inventory"
# Past the probes' own timeouts (connect, then read), a probe still running is given up.
_GRACE_S = 0.3
LEADER_ROLES = {"leader", "master", "primary", "standby_leader"}
# Patroni 3.0.2 (Debian 12) reports a healthy replica as "running"; 3.0.4 and later as
# "streaming" (or "in archive recovery" while it replays from the archive only).
SYNC_ROLES = {"sync_standby", "quorum_standby"}
_SYNC_STATES = {"streaming", "running"}
_IGNORED_ALERTS = {"Watchdog"}
_RESP_CLIENT = PROJECT / "plugins" / "module_utils" / "inkdeploy_resp.py"
_TEMPLATE = re.compile(r"^\{\{\s*([A-Za-z_]\w*)\s*\}\}$")


@dataclass(frozen=True)
class Observation:
    """What one probe saw: DATA (parsed answer) or ERROR (why there was none)."""

    host: str
    target: str  # "10.77.0.14:8008", "http://10.77.0.14:9090"
    seconds: float = 0.0
    data: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    """Everything the probes saw, plus the inventory's facts the rules need."""

    patroni: list[Observation] = field(default_factory=list)  # GET /cluster per db host
    patroni_config: list[Observation] = field(default_factory=list)  # GET /config per db host
    sync_mode_inventory: bool = False  # patroni_synchronous_mode, if /config gives none
    sentinels: list[Observation] = field(default_factory=list)
    master_name: str = SENTINEL_MASTER
    sentinel_auth: str = ""  # where the Sentinel password came from (never the value)
    alerts: Observation | None = None  # None: no monitoring host
    lbs: list[Observation] = field(default_factory=list)
    serving: frozenset[str] | None = None  # the versions live in the fleet (None: not known)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Preflight:
    """The verdict: PROBLEMS (empty: go) and what each check saw."""

    problems: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


# --- the rules (pure) --------------------------------------------------------------------------


def evaluate(obs: Observations) -> Preflight:
    checks = [
        evaluate_patroni(obs.patroni, obs.patroni_config, obs.sync_mode_inventory),
        evaluate_sentinels(obs.sentinels, obs.master_name, obs.sentinel_auth),
        evaluate_alerts(obs.alerts, obs.serving),
        evaluate_lbs(obs.lbs),
    ]
    return Preflight(
        problems=[p for check in checks for p in check.problems],
        checks=[check.as_dict() for check in checks],
    )


def evaluate_patroni(
    clusters: list[Observation], configs: list[Observation], sync_mode_inventory: bool
) -> Check:
    """A running leader, one only; with synchronous mode on and more than one member, a sync
    standby that streams; every member's view of the cluster the same."""
    if not clusters:
        return Check("patroni", True, "no hosts in group db: nothing to check")
    problems = [
        f"Patroni on {o.host} ({o.target}) did not answer GET /cluster: {o.error}; check "
        f"'systemctl status patroni' on {o.host}, or pass --force."
        for o in clusters
        if o.error is not None
    ]
    views = [(o.host, cluster_members(o.data)) for o in clusters if o.error is None]
    seconds = _longest(clusters + configs)
    if not views:
        return Check("patroni", False, "no member answered", seconds, problems)
    sync_mode, sync_source = sync_mode_of(configs, sync_mode_inventory)
    host, members = reference_view(views)
    seen = _describe_members(members)
    problems += _leader_problems(host, members, seen)
    standbys = [m for m in members if m.get("role") in SYNC_ROLES]
    streaming = [m for m in standbys if m.get("state") in _SYNC_STATES]
    if sync_mode and len(members) > 1 and not streaming:
        problems.append(
            f"Patroni on {host} reports no sync standby (members: {seen}); "
            "fix replication or pass --force."
        )
    problems += _disagreement(views)
    detail = f"{host} sees {seen}; synchronous_mode {'on' if sync_mode else 'off'} ({sync_source})"
    return Check("patroni", not problems, detail, seconds, problems)


def cluster_members(data: Any) -> list[dict[str, Any]]:
    members = data.get("members") if isinstance(data, dict) else None
    return [m for m in members or [] if isinstance(m, dict)]


def reference_view(views: list[tuple[str, list[dict]]]) -> tuple[str, list[dict]]:
    """The leader's own view when it answered, else the first member's."""
    for host, members in views:
        if any(m.get("name") == host and m.get("role") in LEADER_ROLES for m in members):
            return host, members
    return views[0]


def _leader_problems(host: str, members: list[dict[str, Any]], seen: str) -> list[str]:
    leaders = [m for m in members if m.get("role") in LEADER_ROLES]
    if not leaders:
        return [
            f"Patroni on {host} reports no leader (members: {seen}); PostgreSQL takes no writes: "
            "see 'patronictl list', or pass --force."
        ]
    if len(leaders) > 1:
        names = ", ".join(str(m.get("name")) for m in leaders)
        return [
            f"Patroni on {host} reports {len(leaders)} leaders ({names}; members: {seen}); "
            "see 'patronictl list' before anything writes, or pass --force."
        ]
    leader = leaders[0]
    if leader.get("state") != "running":
        return [
            f"Patroni on {host} reports leader {leader.get('name')} in state "
            f"{leader.get('state')!r}, not running (members: {seen}); wait for it or pass --force."
        ]
    return []


def _disagreement(views: list[tuple[str, list[dict]]]) -> list[str]:
    def summary(members: list[dict[str, Any]]) -> str:
        leaders = sorted(str(m.get("name")) for m in members if m.get("role") in LEADER_ROLES)
        names = sorted(str(m.get("name")) for m in members)
        return f"leader {', '.join(leaders) or 'none'} of {', '.join(names) or 'no members'}"

    seen = {host: summary(members) for host, members in views}
    if len(set(seen.values())) <= 1:
        return []
    told = "; ".join(f"{host} sees {text}" for host, text in seen.items())
    return [
        f"The Patroni members disagree about the cluster ({told}): a failover in progress or a "
        "split; wait for 'patronictl list' to settle, or pass --force."
    ]


def sync_mode_of(configs: list[Observation], inventory: bool) -> tuple[bool, str]:
    """synchronous_mode as the cluster (GET /config, the DCS) has it, else the inventory's."""
    for o in configs:
        if o.error is None and isinstance(o.data, dict) and "synchronous_mode" in o.data:
            return truthy(o.data["synchronous_mode"]), f"GET /config on {o.host}"
    return inventory, "inventory patroni_synchronous_mode"


def _describe_members(members: list[dict[str, Any]]) -> str:
    if not members:
        return "none"
    parts = []
    for m in members:
        text = f"{m.get('name')} {m.get('role')} {m.get('state')}"
        if m.get("role") not in LEADER_ROLES and "lag" in m:
            text += f" lag {format_bytes(m['lag'])}"
        parts.append(text)
    return ", ".join(parts)


def format_bytes(lag: Any) -> str:
    if not isinstance(lag, int | float) or isinstance(lag, bool):
        return str(lag)  # Patroni writes "unknown" when it cannot tell
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(lag) >= scale:
            return f"{lag / scale:.1f} {unit}"
    return f"{lag:.0f} B"


def evaluate_sentinels(obs: list[Observation], master_name: str, auth: str = "") -> Check:
    """A majority of the sentinels name a master, and all who answer name the same one."""
    if not obs:
        return Check("sentinel", True, "no hosts in group sentinel: nothing to check")
    named = {o.host: _address(o.data) for o in obs if o.error is None and _address(o.data)}
    failed = {
        o.host: o.error or f'does not monitor a master named "{master_name}"'
        for o in obs
        if o.host not in named
    }
    needed = len(obs) // 2 + 1
    said = ", ".join(f"{host} says {addr}" for host, addr in named.items())
    silent = "; ".join(f"{host}: {why}" for host, why in failed.items())
    detail = "; ".join(filter(None, [said, silent, auth]))
    problems = []
    if len(set(named.values())) > 1:
        problems.append(
            f'The sentinels disagree on the Redis master of "{master_name}" ({said}): a '
            "failover in progress or a split; wait for it to settle (SENTINEL masters on each), "
            "or pass --force."
        )
    elif len(named) < needed:
        problems.append(
            f'{len(named)} of {len(obs)} sentinels named a Redis master for "{master_name}", '
            f"{needed} needed for a failover ({silent}); bring the sentinels back, or pass --force."
        )
    return Check("sentinel", not problems, detail, _longest(obs), problems)


def _address(data: Any) -> str | None:
    if isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data):
        return f"{data[0]}:{data[1]}"
    return None


def evaluate_alerts(obs: Observation | None, serving: frozenset[str] | None = None) -> Check:
    """No firing alert of severity critical (Watchdog, which always fires, aside). An alert about
    a version no slot serves (SERVING: the live versions; None: unknown) is left aside too: the
    error ratio of a release just rolled back keeps firing for its rate window after its last
    request, and says nothing about the fleet the next rollout starts from."""
    if obs is None:
        return Check("alerts", True, "no monitoring host and no prometheus_url: alerts not checked")
    if obs.error is not None:
        problem = (
            f"Prometheus at {obs.target} did not answer GET /api/v1/alerts: {obs.error}; the "
            "rollout's gates need it: check it, or pass --force."
        )
        return Check("alerts", False, "Prometheus did not answer", obs.seconds, [problem])
    alerts = [a for a in obs.data or [] if isinstance(a, dict)]
    firing = [a for a in alerts if _is_critical_firing(a)]
    gone = [a for a in firing if not _about_served(a, serving)]
    critical = [a for a in firing if _about_served(a, serving)]
    problems = [_alert_problem(a) for a in critical]
    detail = f"{len(critical)} critical firing of {len(alerts)} alerts (Watchdog ignored"
    if gone:
        versions = sorted({str(a["labels"]["version"]) for a in gone})
        detail += f"; {len(gone)} about {', '.join(versions)}, served by no slot, ignored"
    detail += ")"
    return Check("alerts", not problems, detail, obs.seconds, problems)


def _is_critical_firing(alert: dict[str, Any]) -> bool:
    labels = alert.get("labels") or {}
    return (
        alert.get("state") == "firing"
        and labels.get("severity") == "critical"
        and labels.get("alertname") not in _IGNORED_ALERTS
    )


def _about_served(alert: dict[str, Any], serving: frozenset[str] | None) -> bool:
    version = (alert.get("labels") or {}).get("version")
    return serving is None or version is None or str(version) in serving


def _alert_problem(alert: dict[str, Any]) -> str:
    labels = alert.get("labels") or {}
    where = labels.get("host") or labels.get("instance") or "the fleet"
    summary = str((alert.get("annotations") or {}).get("summary", "")).strip().rstrip(".")
    since = f" since {alert['activeAt']}" if alert.get("activeAt") else ""
    what = f" ({summary})" if summary else ""
    return (
        f"Alert {labels.get('alertname', '?')} (critical) is firing on {where}{since}{what}; "
        "fix it first, or pass --force."
    )


def evaluate_lbs(obs: list[Observation]) -> Check:
    """Every load balancer accepts a TCP connection on its HTTPS port."""
    if not obs:
        return Check("load balancers", True, "no hosts in group lb: nothing to check")
    problems = [
        f"Load balancer {o.host} ({o.target}) did not accept a TCP connection: {o.error}; "
        f"check nginx on {o.host} (systemctl status nginx), or pass --force."
        for o in obs
        if o.error is not None
    ]
    up = [o.host for o in obs if o.error is None]
    detail = f"{len(up)} of {len(obs)} accept connections" + (f" ({', '.join(up)})" if up else "")
    return Check("load balancers", not problems, detail, _longest(obs), problems)


def _longest(obs: list[Observation]) -> float:
    return max((o.seconds for o in obs), default=0.0)


def truthy(value: Any) -> bool:
    """Ansible's and Patroni's booleans (true, "on", "yes", 1); "quorum" (Patroni 4) is on."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"true", "on", "yes", "1", "quorum"}


# --- the probes (I/O) --------------------------------------------------------------------------

Task = tuple[str, str, str, Callable[[], Any]]  # kind, host, target, call


def run_preflight(
    env: Environment, timeout_s: float = 2.0, serving: frozenset[str] | None = None
) -> Preflight:
    """Probe the fleet of ENV (read-only, in parallel, TIMEOUT_S per connect and per read) and
    evaluate what was seen; SERVING: the versions live in the fleet (alerts about others are
    left aside)."""
    tasks: list[Task] = []
    tasks += patroni_tasks(env, timeout_s)
    asks, master, auth = sentinel_tasks(env, timeout_s)
    tasks += asks
    tasks += alert_tasks(env, timeout_s)
    tasks += _lb_tasks(env, timeout_s)
    seen = run_probes(tasks, timeout_s)

    def of(kind: str) -> list[Observation]:
        return [o for k, o in seen if k == kind]

    db = env.groups.get("db", [])
    sync_inventory = bool(db) and truthy(hostvar(env, db[0], "patroni_synchronous_mode"))
    alerts = of("alerts")
    return evaluate(
        Observations(
            patroni=of("patroni"),
            patroni_config=of("patroni_config"),
            sync_mode_inventory=sync_inventory,
            sentinels=of("sentinel"),
            master_name=master,
            sentinel_auth=auth,
            alerts=alerts[0] if alerts else None,
            lbs=of("lb"),
            serving=serving,
        )
    )


def run_probes(tasks: list[Task], timeout_s: float) -> list[tuple[str, Observation]]:
    """Run every task at once; a task still running shortly after TIMEOUT_S (a connect that
    took nearly the timeout, then a read that did too) is given up and reported as such."""
    if not tasks:
        return []
    deadline_s = timeout_s + _GRACE_S
    pool = ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="preflight")
    began = time.monotonic()
    futures: list[tuple[Future[Observation], str]] = [
        (pool.submit(_observe, host, target, call, timeout_s), kind)
        for kind, host, target, call in tasks
    ]
    wait([f for f, _ in futures], timeout=deadline_s)
    pool.shutdown(wait=False, cancel_futures=True)  # never wait for a hung probe
    out = []
    for (future, kind), (_, host, target, _call) in zip(futures, tasks, strict=True):
        if future.done():
            out.append((kind, future.result()))
        else:
            # said as the probe's own timeout says it: which of the two fired first on a busy
            # machine must not change the sentence
            late = Observation(
                host, target, time.monotonic() - began, error=f"no answer within {timeout_s:g} s"
            )
            out.append((kind, late))
    return out


def _observe(host: str, target: str, call: Callable[[], Any], timeout_s: float) -> Observation:
    began = time.monotonic()
    try:
        data = call()
    except Exception as exc:  # every failure is an observation, none a crash
        return Observation(host, target, time.monotonic() - began, error=_reason(exc, timeout_s))
    return Observation(host, target, time.monotonic() - began, data=data)


def _reason(exc: Exception, timeout_s: float) -> str:
    """A short, secret-free reason: 'no answer within 2 s', 'connection refused', 'HTTP 503'."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "connection refused"
    if isinstance(exc, json.JSONDecodeError):
        return "the answer is not JSON"
    return str(exc) or type(exc).__name__


def _get_json(url: str, timeout_s: float, verify: Callable[[], Any] | None = None) -> Any:
    response = httpx.get(url, timeout=timeout_s, verify=verify() if verify else True)
    response.raise_for_status()
    return response.json()


PATRONI_READS = (("patroni", "/cluster"), ("patroni_config", "/config"))


def patroni_base(env: Environment, host: str) -> tuple[str, Callable[[], Any] | None]:
    """HOST's Patroni REST API base URL, and the TLS context to verify it with: https with the
    PostgreSQL CA (roles/postgresql, postgresql_tls on by default) or plain http."""
    address = hostvar(env, host, "patroni_restapi_address") or env.address(host)
    port = int(hostvar(env, host, "patroni_restapi_port") or PATRONI_PORT)
    tls = hostvar(env, host, "postgresql_tls")
    if tls is not None and not truthy(tls):
        return f"http://{address}:{port}", None
    ca = pki.ca_file(env, hostvar(env, host, "postgresql_pki_dir"), "postgresql")
    return f"https://{address}:{port}", pki.lazy_context(ca, "postgresql", "postgresql_pki_dir")


def patroni_tasks(
    env: Environment, timeout_s: float, reads: tuple[tuple[str, str], ...] = PATRONI_READS
) -> list[Task]:
    """A GET per db host and (kind, path) of READS."""
    tasks: list[Task] = []
    for host in env.groups.get("db", []):
        base, verify = patroni_base(env, host)
        target = base.split("://", 1)[1]
        # GET endpoints need no password (restapi.authentication guards the unsafe ones only).
        for kind, path in reads:
            tasks.append((kind, host, target, bind_get(base + path, timeout_s, verify)))
    return tasks


def bind_get(
    url: str, timeout_s: float, verify: Callable[[], Any] | None = None
) -> Callable[[], Any]:
    return lambda: _get_json(url, timeout_s, verify)


def sentinel_tasks(
    env: Environment,
    timeout_s: float,
    questions: Callable[[str], list[tuple[str, ...]]] | None = None,
) -> tuple[list[Task], str, str]:
    """One task per host of group sentinel, the master's name, and where the Sentinel password
    came from. Each task asks QUESTIONS(master) on one connection (default: the master's
    address) and answers the one reply, or the list of replies when there are several."""
    hosts = env.groups.get("sentinel", [])
    if not hosts:
        return [], SENTINEL_MASTER, ""
    first = hosts[0]
    master = (
        hostvar(env, first, "redis_sentinel_master_name")
        or hostvar(env, first, "redis_master_name")
        or SENTINEL_MASTER
    )
    password, source = inventory_secret(env, first, "redis_sentinel_password")
    auth = f"password from {source}" if password else "no password known (none sent)"
    commands = (questions or _master_address)(master)
    tasks: list[Task] = []
    for host in hosts:
        address = env.address(host)
        port = int(hostvar(env, host, "redis_sentinel_port") or SENTINEL_PORT)
        tls = redis_tls(env, host)

        def ask(
            address: str = address, port: int = port, tls: Callable[[], ssl.SSLContext] | None = tls
        ) -> Any:
            try:
                replies = ask_resp(address, port, password, commands, timeout_s, tls)
            except (ConnectionResetError, resp_client().RedisError) as exc:
                if tls is None and ("reset" in str(exc) or "closed" in str(exc)):
                    # a TLS-only sentinel drops a plain client without a word
                    raise ConnectionError(
                        f"{exc} (if it listens with TLS only, {TLS_HINT})"
                    ) from None
                raise
            return replies[0] if len(replies) == 1 else replies

        tasks.append(("sentinel", host, f"{address}:{port}", ask))
    return tasks, master, auth


def _master_address(master: str) -> list[tuple[str, ...]]:
    return [("SENTINEL", "get-master-addr-by-name", master)]


def ask_resp(
    address: str,
    port: int,
    password: str | None,
    commands: list[tuple[str, ...]],
    timeout_s: float,
    tls: Callable[[], ssl.SSLContext] | None = None,
) -> list[Any]:
    """COMMANDS on one connection to a Redis server or a sentinel at ADDRESS:PORT (over TLS
    with the context TLS gives, AUTH first when a PASSWORD is known), each reply in order; an
    error reply raises resp.RedisError."""
    resp = resp_client()
    conn = resp.Connection(address, port, timeout=timeout_s, ssl_context=tls() if tls else None)
    try:
        if password:
            conn.call("AUTH", password)
        return [conn.call(*command) for command in commands]
    finally:
        conn.close()


def redis_tls(env: Environment, host: str) -> Callable[[], ssl.SSLContext] | None:
    """The TLS context to reach HOST's Redis server and sentinel with, when the inventory turns
    redis_tls on (the roles then listen with TLS only); None for plain connections."""
    if not truthy(hostvar(env, host, "redis_tls")):
        return None
    ca = pki.ca_file(env, hostvar(env, host, "redis_pki_dir"), "redis")
    return pki.lazy_context(ca, "redis", "redis_pki_dir")


@cache
def resp_client() -> ModuleType:
    """The RESP client the redis and redis_sentinel modules use (plugins/module_utils), loaded
    from the project checkout as the playbooks are: it is plain Python with no Ansible import."""
    spec = importlib.util.spec_from_file_location("inkdeploy_resp", _RESP_CLIENT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the RESP client from {_RESP_CLIENT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alert_tasks(env: Environment, timeout_s: float) -> list[Task]:
    url = env.prometheus_url
    if not url:
        return []
    monitoring = env.groups.get("monitoring", [])
    host = monitoring[0] if monitoring and not env.policy.prometheus_url else "prometheus"

    def alerts() -> Any:
        return (_get_json(f"{url}/api/v1/alerts", timeout_s).get("data") or {}).get("alerts", [])

    return [("alerts", host, url, alerts)]


def _lb_tasks(env: Environment, timeout_s: float) -> list[Task]:
    tasks: list[Task] = []
    for host in env.groups.get("lb", []):
        address = env.address(host)

        def connect(address: str = address) -> None:
            socket.create_connection((address, LB_HTTPS_PORT), timeout=timeout_s).close()

        tasks.append(("lb", host, f"{address}:{LB_HTTPS_PORT}", connect))
    return tasks


# --- inventory values and secrets --------------------------------------------------------------


def hostvar(env: Environment, host: str, name: str, depth: int = 3) -> Any:
    """HOST's NAME as ansible-inventory shows it, following plain '{{ other }}' references;
    None when unset or still a template (ansible-inventory does not render them)."""
    value = env.hostvars.get(host, {}).get(name)
    if isinstance(value, str):
        match = _TEMPLATE.match(value.strip())
        if match and depth > 0:
            return hostvar(env, host, match.group(1), depth - 1)
        if "{{" in value or "{%" in value:
            return None
    if isinstance(value, dict):  # a vaulted value without the vault password
        return None
    return value


def inventory_secret(env: Environment, host: str, name: str) -> tuple[str | None, str]:
    """NAME's value and where it came from: the inventory (the lab writes its secrets into its
    hosts.yml; production decrypts Vault), else a lab's own secrets file (read, never written)."""
    value = hostvar(env, host, name)
    if isinstance(value, str) and value:
        return value, f"the inventory ({name})"
    lab = hostvar(env, host, "inkdeploy_lab")
    if isinstance(lab, str) and LAB_NAME_RE.match(lab):
        store = LabLayout.for_lab(lab).root / "secrets.json"
        stored = _read_json(store).get(name)
        if isinstance(stored, str) and stored:
            return stored, f"the lab's {store} ({name})"
    return None, ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
