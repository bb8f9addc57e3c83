"""The orchestrator's commands as functions: read the fleet, plan, take the lock, execute, roll
back on failure, record history. The CLI (deploy_cli.py) only parses and prints."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inkdeploy.build.builder import read_manifest
from inkdeploy.config import Strategy
from inkdeploy.errors import InkdeployError
from inkdeploy.events import (
    Event,
    Events,
    JsonLinesFile,
    JsonStdout,
    environment_secrets,
    redact,
    sinks_from_notify,
)
from inkdeploy.execute import Context, Executor, Outcome
from inkdeploy.fastpath import LB_READ_TIMEOUT_S, FastPath, RemoteError
from inkdeploy.fleet import SLOTS, Fleet, build_fleet, drain_marks, parse_weights
from inkdeploy.gates.prometheus import PrometheusClient, render
from inkdeploy.inventory import ConfigError, Environment, load_environment
from inkdeploy.plan import (
    Plan,
    PlanError,
    emergency_weights,
    make_plan,
    new_rollout_id,
    restore_steps,
    rollback_plan,
)
from inkdeploy.preflight import Preflight, run_preflight
from inkdeploy.runner import PROJECT, Progress, Runner
from inkdeploy.state.journal import Journal, JournalView, state_dir
from inkdeploy.state.lock import (
    QUERY_TIMEOUT_S,
    FleetLock,
    Heartbeat,
    LockHeld,
    agreed_holder,
    describe_holder,
    holder_info,
    lock_hosts,
    merge_history,
    whoami,
)

FACT_TASKS = ("Read the slots", "Read the weights nginx serves", "Read the deploy lock")
# slots per host, upstreams.conf per load balancer, the lock with its history
FleetRead = tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]
# ... and, over the fast path, the app hosts and the load balancers that did not answer
FastRead = tuple[
    dict[str, dict[str, Any]], dict[str, str], dict[str, Any], tuple[str, ...], tuple[str, ...]
]
# How long an app or worker host has to answer the fast path's slot read: a host that is down
# costs `inkdeploy status` this long; a rollout asks a silent host once more, more patiently.
SLOTS_TIMEOUT_S = 4.0
# `inkdeploy status` gives every SSH read less: it only shows a slow host as unreachable, while
# a rollback or drain would leave a slow load balancer out of its weight steps
STATUS_READ_TIMEOUT_S = 3.0
SLOTS_RETRY_TIMEOUT_S = 15.0


class RolloutFailed(InkdeployError):
    exit_code = 4


class PreflightFailed(PlanError):
    """The data tier, the alerts or a load balancer say the fleet is not fit for a rollout."""


def check_preflight(session: Session, force: bool, fleet: Fleet) -> Preflight:
    """Refuse (unless FORCE) when the pre-flight finds a problem: a failing gate would then
    blame the release for the database, the broker or a load balancer."""
    found = run_preflight(session.env, serving=frozenset(fleet.live_versions))
    if found.problems and not force:
        raise PreflightFailed(
            "Pre-flight refused the rollout, nothing was changed: " + " ".join(found.problems)
        )
    return found


@dataclass
class Session:
    """One command against one environment."""

    env: Environment
    runner: Runner
    journal: Journal
    lock: FleetLock
    # the deploy lock's holder as the last read_fleet saw it ({} when free)
    lock_holder: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # renews the lease while this session holds the lock (see hold())
    heartbeat: Heartbeat | None = None
    # the SSH fast path (None: playbooks only)
    fast: FastPath | None = None

    @classmethod
    def open(
        cls,
        inventory: Path,
        progress: Progress | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Session:
        return cls.of(load_environment(inventory, overrides), progress)

    @classmethod
    def of(cls, env: Environment, progress: Progress | None = None) -> Session:
        """A session on an environment already loaded (the on-call verbs load it once)."""
        runner = Runner(env.inventory, progress)
        fast = FastPath.of(env)
        lock = FleetLock(runner, env.policy.app, env.policy.lock_stale_s, fast, lock_hosts(env))
        return cls(env, runner, Journal(state_dir(env.inventory)), lock, fast=fast)

    def read_fleet(
        self,
        tolerate_unreachable: bool = False,
        lbs_may_be_down: bool = False,
        read_timeout_s: float | None = None,
    ) -> Fleet:
        """The fleet as it is. An app host that does not answer is an error unless no load
        balancer sends it traffic (drained: plans leave it out) or TOLERATE_UNREACHABLE
        (`inkdeploy status`, drain: it is shown as unreachable). A load balancer that does not
        answer is an error unless TOLERATE_UNREACHABLE or LBS_MAY_BE_DOWN (rollback): then the
        fleet is what the others serve, and weight steps leave the silent ones out.
        READ_TIMEOUT_S: how long each SSH read may take (status: STATUS_READ_TIMEOUT_S)."""
        lbs_ok = tolerate_unreachable or lbs_may_be_down
        slots, confs, lock, unreachable, silent_lbs = self._read_fast(
            tolerate_unreachable, lbs_ok, read_timeout_s
        ) or (*self._read_playbook(), (), ())
        self.lock_holder = lock.get("holder") or {}
        self.history = list(lock.get("history") or [])
        fleet = build_fleet(
            self.env.policy.app,
            self.env.app_hosts,
            {h: self.env.address(h) for h in self.env.app_hosts},
            slots,
            confs,
            self.env.worker_hosts,
            unreachable,
            drain_marks(self.history),
        )
        if self.fast is not None:
            self.fast.down_lbs = frozenset(silent_lbs)
        return replace(
            fleet,
            lb_unreachable=silent_lbs,
            lock_silent=tuple(lock.get("silent") or ()),
            workers_silent=tuple(h for h in self.env.worker_hosts if h not in slots),
        )

    def _read_fast(
        self, tolerate_unreachable: bool, lbs_ok: bool = False, timeout_s: float | None = None
    ) -> FastRead | None:
        """Slots, upstreams and lock over SSH, all hosts at once (the three reads side by side,
        so a silent host costs its timeout once), plus the app hosts and the load balancers that
        did not answer; None: use the playbook."""
        if self.fast is None:
            return None
        with ThreadPoolExecutor(max_workers=3) as pool:
            # status (TOLERATE_UNREACHABLE) answers even when no load balancer does
            confs_f = pool.submit(
                self.fast.upstreams, lbs_ok, tolerate_unreachable, timeout_s or LB_READ_TIMEOUT_S
            )
            lock_f = pool.submit(self._read_lock, timeout_s or QUERY_TIMEOUT_S)
            read_f = pool.submit(self.fast.slots, timeout_s or SLOTS_TIMEOUT_S)
            try:
                confs, lock, read = confs_f.result(), lock_f.result(), read_f.result()
            except RemoteError as exc:
                if exc.unreachable:
                    raise InkdeployError(
                        f"Could not read the fleet: {exc}. Nothing was changed; "
                        f"fix or remove {exc.host} and try again."
                    ) from None
                return None
        if confs is None or lock is None or read is None:
            return None
        silent = [h for h, r in read.items() if isinstance(r, RemoteError) and r.unreachable]
        # a rollback or drain (LBS_OK) goes on without a worker host that serves no traffic: its
        # workers keep their release until it is back (Session.read_fleet: workers_silent)
        spare = {h for h in silent if lbs_ok and h not in self.env.app_hosts}
        silent = [h for h in silent if h not in spare]
        if silent and not tolerate_unreachable:
            # a slow answer under load is not a dead host: once more, with patience
            again = self.fast.slots(SLOTS_RETRY_TIMEOUT_S, hosts=tuple(silent))
            read.update(again or {})
        errors = {h: r for h, r in read.items() if isinstance(r, RemoteError)}
        if any(not e.unreachable for e in errors.values()):
            return None  # the playbook may get through where the fast path cannot
        slots = {h: r for h, r in read.items() if not isinstance(r, RemoteError)}
        texts = {lb: t for lb, t in confs.items() if isinstance(t, str)}
        silent_lbs = tuple(lb for lb in confs if lb not in texts)
        if errors and not tolerate_unreachable:
            weights = [parse_weights(text, self.env.policy.app) for text in texts.values()]
            marked = drain_marks(list(lock.get("history") or []))
            serving = [
                h
                for h in errors
                if h not in spare
                and (h not in marked or any(w.get(f"{h}:{s}", 0) for w in weights for s in SLOTS))
            ]
            if serving:
                host = serving[0]
                advice = (
                    f"if it is down, take it out of the load balancers with "
                    f"`inkdeploy drain {host}` and try again"
                    if host in self.env.app_hosts
                    else "fix it or remove it from the inventory and try again"
                )
                raise InkdeployError(
                    f"Could not read the fleet: {errors[host]}. Nothing was changed; {advice}."
                )
        return slots, texts, lock, tuple(h for h in errors if h in self.env.app_hosts), silent_lbs

    def _read_lock(self, timeout_s: float = QUERY_TIMEOUT_S) -> dict[str, Any] | None:
        """The lock's holder and history over the fast path alone (None: it cannot serve)."""
        if self.fast is None or not self.fast.serves(self.lock.hosts):
            return None
        return self.lock.query(history_lines=500, timeout_s=timeout_s)

    def _read_playbook(self) -> FleetRead:
        result = self.runner.run(
            "rollout/facts.yml", {"rollout_app": self.env.policy.app}, collect=FACT_TASKS
        )
        unreachable = sorted({f.host for f in result.failures})
        if unreachable:
            raise InkdeployError(
                f"Could not read the fleet: {result.first_failure()}. Nothing was changed; "
                f"fix or remove {', '.join(unreachable)} and try again."
            )
        slots = result.results.get(FACT_TASKS[0], {})
        answers = result.results.get(FACT_TASKS[2], {})
        lock = {"holder": agreed_holder(answers), "history": merge_history(answers, 500)}
        confs = {
            host: base64.b64decode(res.get("content", "")).decode()
            for host, res in result.results.get(FACT_TASKS[1], {}).items()
        }
        return slots, confs, lock

    @contextmanager
    def hold(self, holder: dict[str, Any], *, takeover: bool = False) -> Iterator[Heartbeat]:
        """Take the deploy lock with a lease and renew it until the block ends; every playbook
        run meanwhile tells the fleet's lock checks (site.yml, lb-weights.yml) that it is the
        holder. The caller releases the lock (with its history record)."""
        lease = self.env.policy.lock_lease_s
        self.lock.acquire(holder, takeover=takeover, lease_s=lease)
        self.runner.lock_owner = holder["rollout"]
        # its own runner: renewals run beside the steps and show no progress
        quiet = FleetLock(Runner(self.env.inventory), self.env.policy.app,
                          self.lock.stale_after, self.fast, self.lock.hosts,
                          quiet_since=self.lock.quiet_since)  # fmt: skip
        self.heartbeat = Heartbeat(quiet, holder["rollout"], min(15.0, lease / 4))
        try:
            with self.heartbeat:
                yield self.heartbeat
        finally:
            self.runner.lock_owner = ""

    def secrets(self) -> list[str]:
        """Values never to show or keep in clear (events, journal, the history on the fleet):
        the Grafana token, secret-looking controller variables, the inventory's secrets."""
        token = os.environ.get(self.env.policy.notify.grafana_token_env, "")
        found = [token, *environment_secrets(os.environ)]
        for hostvars in self.env.hostvars.values():
            found += environment_secrets(hostvars)
        return [s for s in found if s]

    def lock_lost(self) -> dict[str, Any] | None:
        return self.heartbeat.lost if self.heartbeat else None


def check_artifact(env: Environment, version: str, artifact: Path | None) -> Path:
    path = artifact or PROJECT / "dist" / f"{env.policy.app}-{version}.tar.gz"
    if not path.is_file():
        raise ConfigError(
            f"No artifact for {version}: {path} does not exist; build it with "
            f"`inkdeploy build PROJECT --version {version}` or pass --artifact."
        )
    try:
        manifest = read_manifest(path)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"{path} is not an artifact built by `inkdeploy build`: {exc}") from None
    if manifest.version != version:
        raise ConfigError(
            f"{path} holds version {manifest.version}, not {version}; "
            "pass the artifact of the version you deploy."
        )
    if manifest.name != env.policy.app:
        raise ConfigError(f"{path} is an artifact of {manifest.name}, not {env.policy.app}.")
    return path.resolve()


def check_gate_queries(env: Environment, version: str, previous: str | None) -> None:
    """Ask Prometheus to parse every gate query before anything changes."""
    if not env.prometheus_url:
        return
    client = PrometheusClient(env.prometheus_url)
    params = {"version": version, "previous": previous or ""}
    for gate in env.policy.prometheus_gates:
        client.check_query(render(gate.query, **params))
    for metric in env.policy.judge.metrics:
        client.check_query(render(metric.query, version=version))


@dataclass
class RolloutRequest:
    inventory: Path
    version: str
    strategy: Strategy | None = None
    artifact: Path | None = None
    message: str = ""
    lock_wait: float = 0.0
    json: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    # start even when the pre-flight checks of the data tier and alerts find problems
    force: bool = False


def _events(session: Session, rollout: str, json_out: bool) -> Events:
    sinks: list[Any] = [JsonLinesFile(session.journal.path(rollout))]
    if json_out:
        sinks.append(JsonStdout())
    notify, warnings = sinks_from_notify(session.env.policy.notify, os.environ)
    events = Events(rollout, [*sinks, *notify], secrets=session.secrets())
    for warning in warnings:
        events.emit("warning", message=warning)
    return events


def prepare(
    session: Session, req: RolloutRequest, rollout: str | None = None
) -> tuple[Plan, Fleet, Path]:
    """Everything that can be checked without changing the fleet: inputs, fleet state, plan,
    gate queries. Raises an InkdeployError with one sentence when anything is wrong.
     RollOUT: the id under which the caller holds the deploy lock already (a rollout reads the
    fleet only once it holds the lock, so nothing moves between its reading and its plan);
    None for `inkdeploy plan`, which takes no lock."""
    strategy = req.strategy or session.env.policy.strategy
    artifact = check_artifact(session.env, req.version, req.artifact)
    fleet = session.read_fleet()
    holder = session.lock_holder
    if holder and not holder.get("expired") and holder.get("rollout") != rollout:
        # the holder's rollout is the reason the fleet may look odd: say that first
        raise LockHeld(
            "Another rollout holds the deploy lock: "
            f"{describe_holder(holder, session.env.policy.lock_stale_s)}. Wait for "
            "it (--lock-wait), or if it is stale, `inkdeploy lock release --force`."
        )
    plan = make_plan(
        fleet,
        session.env.policy,
        req.version,
        strategy,
        tuple(session.env.worker_hosts),
        rollout=rollout,
    )
    check_gate_queries(session.env, req.version, plan.previous)
    return plan, fleet, artifact


def _context(session: Session, events: Events, artifact: Path | None, ask: Any) -> Context:
    return Context(
        runner=session.runner,
        policy=session.env.policy,
        events=events,
        journal=session.journal,
        addresses={h: session.env.address(h) for h in session.env.app_hosts},
        slot_ports={h: session.env.slot_ports(h) for h in session.env.app_hosts},
        environment=session.env.name,
        artifact=artifact,
        prometheus_url=session.env.prometheus_url,
        ask_approval=ask,
        lock_lost=session.lock_lost,
        fast=session.fast,
    )


@dataclass
class RolloutResult:
    rollout: str
    result: str  # succeeded | rolled_back | rollback_failed | stopped (the lock was taken)
    version: str
    previous: str | None
    message: str
    seconds: float
    rollback_seconds: float = 0.0
    gates: list[dict[str, Any]] = field(default_factory=list)
    # rollback: seconds from the command's start until all traffic was on the target release;
    # a failed rollout: seconds from the failure until traffic was back on the previous release
    traffic_switched_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _record(
    plan: Plan, result: str, reason: str, started: float, seconds: float, secrets: list[str]
) -> dict[str, Any]:
    return {
        "rollout": plan.rollout,
        "kind": plan.kind,
        "strategy": plan.strategy,
        "version": plan.version,
        "previous": plan.previous,
        "result": result,
        # kept on the fleet (the lock's history): a failed hook's command line can be in it
        "reason": redact(reason, secrets),
        "user": whoami(),
        "started": started,
        "seconds": round(seconds, 1),
        # a release that was rolled back (or rolled back from) is never a rollback target again
        "abandoned": plan.version if result != "succeeded" and plan.kind == "rollout" else None,
    }


def _signals_to_exceptions() -> None:
    """SIGTERM (systemd, CI timeouts) unwinds like Ctrl-C, so the rollback and lock release
    run; SIGKILL cannot be caught: the journal and `rollout --resume` cover that case."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@contextmanager
def deferred_signals(events: Events) -> Iterator[list[tuple[int, float]]]:
    """Hold Ctrl-C and SIGTERM while traffic is moved back and the rollback finishes: a second
    Ctrl-C must not leave traffic split and the lock released. The command ends normally once
    the rollback is done (SIGKILL still stops it; then `rollout --resume` finishes the
    rollback). The handler only notes the signal and writes one line to stderr with a plain
    write(2): it may run in the middle of an event being written, so it must not emit one."""
    received: list[tuple[int, float]] = []

    def hold(signum: int, frame: Any) -> None:
        received.append((signum, time.time()))
        os.write(2, _HELD_NOTICE)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received  # (signal, when) as they arrive
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum, at in received:
            events.emit("signal_deferred", signal=signal.Signals(signum).name, at=at,
                        message="held until the rollback was done")  # fmt: skip


_HELD_NOTICE = (
    b"inkdeploy: rolling back, traffic goes back to the last good release first; the command "
    b"ends when the rollback is done.\n"
)


def run_plan(
    session: Session,
    plan: Plan,
    events: Events,
    artifact: Path | None,
    ask: Any = None,
    start: int = 0,
) -> RolloutResult:
    """Execute PLAN from step START; on failure restore traffic to plan.previous. The caller
    holds the lock."""
    began = time.monotonic()
    ctx = _context(session, events, artifact, ask)
    executor = Executor(ctx, plan)
    try:
        outcome = executor.run(start)
    except KeyboardInterrupt:
        events.emit("interrupted", message="interrupted by a signal")
        outcome = Outcome(False, None, "The rollout was interrupted (Ctrl-C or SIGTERM).")
    gates = [g.to_dict() for g in ctx.gate_results]
    if outcome.ok:
        return RolloutResult(
            plan.rollout, "succeeded", plan.version, plan.previous,
            f"{plan.version} is live ({plan.strategy}).", time.monotonic() - began, gates=gates,
        )  # fmt: skip
    if outcome.lock_lost:
        return RolloutResult(
            plan.rollout, "stopped", plan.version, plan.previous, outcome.message,
            time.monotonic() - began, gates=gates,
        )  # fmt: skip
    if plan.kind == "rollback" or not plan.previous:
        return RolloutResult(
            plan.rollout, "rollback_failed", plan.version, plan.previous, outcome.message,
            time.monotonic() - began, gates=gates,
        )  # fmt: skip
    return roll_back(session, plan, events, outcome.message, outcome.failed_step, began, gates)


def roll_back(
    session: Session,
    plan: Plan,
    events: Events,
    reason: str,
    failed_step: int | None,
    began: float,
    gates: list[dict[str, Any]] | None = None,
    fast: bool = True,
) -> RolloutResult:
    """Bring traffic back to plan.previous: first the one reload that is safe without looking
    (FAST, when there is one), then from the fleet as it is now whatever else is needed.
    Signals wait until it is done. Also how `rollout --resume` finishes a rollback that a
    killed orchestrator had begun (FAST off: the old slots may have stopped since)."""
    if not plan.previous:
        raise PlanError(f"Rollout {plan.rollout} has no previous release to roll back to.")
    with deferred_signals(events) as held:
        events.emit("rollback_started", reason=reason, target=plan.previous)
        rb_began, rb_began_wall = time.monotonic(), time.time()
        traffic_back: float | None = None
        try:
            emergency = emergency_weights(plan, failed_step) if fast else None
            if emergency:
                fast_plan = Plan(plan.rollout, "rollback", plan.strategy, plan.previous,
                                 plan.version, [emergency])  # fmt: skip
                ctx = _context(session, events, None, None)
                if Executor(ctx, fast_plan).run(phase="rollback").ok:
                    traffic_back = time.monotonic() - rb_began
            fleet = session.read_fleet()
            steps = restore_steps(
                fleet, plan.previous, plan.base_weights, tuple(session.env.worker_hosts)
            )
            restore = Plan(plan.rollout, "rollback", plan.strategy, plan.previous, plan.version,
                           steps)  # fmt: skip
            rb_ctx = _context(session, events, None, None)
            rb = Executor(rb_ctx, restore).run(phase="rollback")
            rb_ok, rb_message = rb.ok, rb.message
            if traffic_back is None and rb_ctx.traffic_switched:
                traffic_back = rb_ctx.traffic_switched - rb_began_wall
        except InkdeployError as exc:
            rb_ok, rb_message = False, exc.message
        rb_seconds = time.monotonic() - rb_began
        events.emit(
            "rollback_finished", ok=rb_ok, seconds=round(rb_seconds, 2), message=rb_message,
            traffic_back_s=round(traffic_back, 2) if traffic_back is not None else None,
        )  # fmt: skip
    held_note = " A Ctrl-C/SIGTERM during the rollback was held until it finished." if held else ""
    if rb_ok:
        since = "the failure" if fast else "the resume"
        back = f"{traffic_back:.1f} s after {since}, " if traffic_back is not None else ""
        message = (
            f"{reason} Traffic is back on {plan.previous} ({back}"
            f"rollback done in {rb_seconds:.1f} s). Run 'inkdeploy history' for the full record."
            f"{held_note}"
        )
        result = "rolled_back"
    else:
        message = (
            f"{reason} The automatic rollback to {plan.previous} failed too: "
            f"{rb_message} Run `inkdeploy status`, then `inkdeploy rollback`.{held_note}"
        )
        result = "rollback_failed"
    return RolloutResult(
        plan.rollout, result, plan.version, plan.previous, message,
        time.monotonic() - began, rb_seconds, gates or [], traffic_back,
    )  # fmt: skip


def _refuse_if_busy(session: Session) -> None:
    """A rollout of this controller that runs, or was interrupted and is not finished."""
    current = session.journal.current()
    if not current:
        return
    view = session.journal.read(current)
    if view.active:
        raise LockHeld(
            f"Rollout {current} is still running from this controller (pid {view.pid}); "
            "use `inkdeploy pause|promote|abort` or wait for it."
        )
    if view.interrupted and view.steps:
        raise PlanError(f"{interrupted_summary(view)}; {interrupted_advice(view)}.")


def interrupted_summary(view: JournalView) -> str:
    version = view.started.get("version")
    if view.stopped:
        return (
            f"Rollout {view.rollout} of {version} stopped at step {view.next_step + 1}/"
            f"{len(view.steps)} when its deploy lock was taken away"
        )
    if view.must_roll_back:
        return (
            f"Rollout {view.rollout} of {version} was interrupted during its automatic rollback "
            f"to {view.started.get('previous')}"
        )
    return (
        f"Rollout {view.rollout} of {version} was interrupted at step "
        f"{view.next_step + 1}/{len(view.steps)}"
    )


def interrupted_advice(view: JournalView) -> str:
    if view.stopped:
        return (
            "undo it with `inkdeploy rollback` (or `inkdeploy rollout --resume`, which rolls it "
            "back)"
        )
    if view.must_roll_back:
        return (
            f"finish the rollback with `inkdeploy rollout --resume` (or `inkdeploy rollback`); "
            f"{view.started.get('version')} is not rolled out again"
        )
    return "finish it with `inkdeploy rollout --resume` or undo it with `inkdeploy rollback`"


def rollout(
    req: RolloutRequest,
    progress: Progress | None = None,
    ask: Any = None,
    confirm: Callable[[Plan], bool] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> RolloutResult:
    """Take the deploy lock, then read the fleet and plan (nothing can move in between), ask,
    execute, roll back on failure. Until the first step runs, any refusal releases the lock
    and changes nothing."""
    session = Session.open(req.inventory, progress, req.overrides)
    _refuse_if_busy(session)
    strategy = req.strategy or session.env.policy.strategy
    check_artifact(session.env, req.version, req.artifact)
    if req.lock_wait > 0:
        session.lock.wait_free(req.lock_wait)
    rollout_id = new_rollout_id(req.version)
    with session.hold(holder_info(rollout_id, req.version, strategy, req.message)):
        try:
            plan, fleet, artifact = prepare(session, req, rollout_id)
            preflight = check_preflight(session, req.force, fleet)
            if confirm and not confirm(plan):
                raise InkdeployError("Not confirmed; nothing was changed.", exit_code=1)
        except BaseException:
            session.lock.release(rollout_id)  # nothing ran: no history entry
            raise
        started = time.time()
        events = _events(session, plan.rollout, req.json)
        if on_event:
            events.subscribe(on_event)
        _signals_to_exceptions()
        result: RolloutResult | None = None
        try:
            session.journal.set_current(plan.rollout)
            session.journal.clear_requests()
            events.emit(
                "rollout_started", pid=os.getpid(), user=whoami(), app=session.env.policy.app,
                environment=session.env.name, inventory=str(req.inventory.resolve()),
                artifact=str(artifact), message=req.message, fleet=fleet.to_dict(),
                preflight=preflight.to_dict(), **plan.to_dict(),
            )  # fmt: skip
            for problem in preflight.problems:  # started anyway: --force
                events.emit("warning", message=f"Pre-flight (overridden with --force): {problem}")
            result = run_plan(session, plan, events, artifact, ask)
            return result
        finally:
            _close(session, plan, events, result, started)


def _close(
    session: Session, plan: Plan, events: Events, result: RolloutResult | None, started: float
) -> None:
    """Every exit path of a rollout: the last event, the journal, history and the lock."""
    final = result.result if result else "interrupted"
    reason = result.message if result else "the orchestrator stopped"
    events.emit("rollout_finished", result=final, message=reason, app=session.env.policy.app)
    events.close()
    if final != "stopped":  # a stopped rollout stays current: `rollback` or `--resume` ends it
        session.journal.set_current(None)
    if session.heartbeat:
        session.heartbeat.stop()
    record = _record(plan, final, reason, started, time.time() - started, session.secrets())
    session.lock.release(plan.rollout, record)


def resume(
    inventory: Path,
    json_out: bool = False,
    progress: Progress | None = None,
    ask: Any = None,
    on_event: Callable[[Event], None] | None = None,
) -> RolloutResult:
    """Finish an interrupted rollout: from the interrupted step when its steps were going well,
    or, when a step had failed or its automatic rollback had begun, the rollback (the release
    is abandoned, never promoted)."""
    session = Session.open(inventory, progress)
    view = _interrupted(session)
    plan = Plan.from_dict(view.started)
    artifact = Path(view.started["artifact"]) if view.started.get("artifact") else None
    holder = holder_info(plan.rollout, plan.version, plan.strategy, "resumed")
    with session.hold(holder, takeover=True):
        events = _events(session, plan.rollout, json_out)
        if on_event:
            events.subscribe(on_event)
        _signals_to_exceptions()
        started = time.time()
        result: RolloutResult | None = None
        try:
            session.journal.set_current(plan.rollout)
            if view.must_roll_back and plan.previous:
                reason = (view.rollback or {}).get("reason") or next(
                    iter(view.failed.values()), "The rollout was interrupted."
                )
                events.emit("resumed", pid=os.getpid(), user=whoami(), rollback=True)
                result = roll_back(session, plan, events, reason, None, time.monotonic(),
                                   fast=False)  # fmt: skip
            else:
                events.emit("resumed", pid=os.getpid(), user=whoami(), from_step=view.next_step)
                # The interrupted step may have half-run: every step is idempotent: run it again.
                result = run_plan(session, plan, events, artifact, ask, start=view.next_step)
            return result
        finally:
            _close(session, plan, events, result, started)


def _interrupted(session: Session) -> JournalView:
    current = session.journal.current()
    if not current:
        raise PlanError("There is no interrupted rollout to resume (`inkdeploy status`).")
    view = session.journal.read(current)
    if view.active:
        raise LockHeld(f"Rollout {current} is still running (pid {view.pid}).")
    if not view.steps:
        raise PlanError(f"The journal of rollout {current} has no plan; use `inkdeploy rollback`.")
    return view


def history(session: Session) -> list[dict[str, Any]]:
    return list(session.lock.query().get("history", []))


def abandoned_releases(history_rows: list[dict[str, Any]]) -> set[str]:
    """Releases a rollback left behind, unless a later rollout put them live again on purpose."""
    abandoned: set[str] = set()
    for row in history_rows:
        if row.get("kind") == "rollout" and row.get("result") == "succeeded":
            abandoned.discard(row.get("version"))
        if row.get("abandoned"):
            abandoned.add(row["abandoned"])
    return abandoned


def rollback_target(history_rows: list[dict[str, Any]], fleet: Fleet, to: str | None) -> str:
    current = fleet.current_version
    abandoned = abandoned_releases(history_rows)
    if to:
        if to in abandoned:
            raise PlanError(
                f"{to} was abandoned by an earlier rollback; roll it out again on purpose with "
                "`inkdeploy rollout` if you really want it."
            )
        return to
    installed = set.intersection(*(set(fleet.releases.get(h, ())) for h in fleet.hosts))
    for row in reversed(history_rows):
        for candidate in (row.get("previous"), row.get("version")):
            if (
                candidate
                and candidate != current
                and candidate not in abandoned
                and candidate in installed
                and row.get("result") in {"succeeded", "rolled_back"}
            ):
                return candidate
    raise PlanError(
        "No earlier release to go back to is recorded and still installed; "
        "name one with --to VERSION (`inkdeploy status` lists installed releases)."
    )


def rollback(
    inventory: Path,
    to: str | None = None,
    message: str = "",
    json_out: bool = False,
    progress: Progress | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> RolloutResult:
    """Fast path back: LB switch if the old slot still runs, else start it first; no gates but
    the HTTP health check of a started slot. Also finishes an interrupted rollout."""
    command_started = time.time()
    session = Session.open(inventory, progress)
    interrupted: JournalView | None = None
    current_id = session.journal.current()
    if current_id:
        view = session.journal.read(current_id)
        if view.active:
            raise LockHeld(f"Rollout {current_id} is still running (pid {view.pid}); "
                           "use `inkdeploy abort` to stop it and roll back.")  # fmt: skip
        if view.interrupted:
            interrupted = view
    fleet = session.read_fleet(lbs_may_be_down=True)
    rows = session.history
    if interrupted and not to:
        target = interrupted.started.get("previous")
        base = interrupted.started.get("base_weights")
    else:
        target = rollback_target(rows, fleet, to)
        base = None
    current = fleet.current_version
    workers = tuple(h for h in session.env.worker_hosts if h not in fleet.workers_silent)
    plan = rollback_plan(fleet, target, current, workers, base)
    plan = replace(plan, notes=plan.notes + [
        f"Load balancer {lb} does not answer and keeps its old weights: take it out of DNS; "
        f"once it is back, `inkdeploy rollback --to {target}` sets it like the others."
        for lb in fleet.lb_unreachable
    ] + [
        f"Worker host {host} does not answer: its workers keep the release they had; once it is "
        f"back, `inkdeploy rollback --to {target}` restarts them on {target}."
        for host in fleet.workers_silent
    ])  # fmt: skip
    rollout_id = interrupted.rollout if interrupted else plan.rollout
    holder = holder_info(rollout_id, target, "rollback", message or "rollback")
    with session.hold(holder, takeover=interrupted is not None):
        return _rollback_locked(
            session, plan, fleet, target, current, rollout_id, interrupted, message, json_out,
            on_event, command_started,
        )  # fmt: skip


def _rollback_locked(
    session: Session,
    plan: Plan,
    fleet: Fleet,
    target: str,
    current: str | None,
    rollout_id: str,
    interrupted: JournalView | None,
    message: str,
    json_out: bool,
    on_event: Callable[[Event], None] | None,
    command_started: float,
) -> RolloutResult:
    events = _events(session, plan.rollout, json_out)
    if on_event:
        events.subscribe(on_event)
    started = time.time()
    began = time.monotonic()
    outcome = Outcome(False, None, "interrupted")
    ctx = _context(session, events, None, None)
    try:
        events.emit("rollout_started", pid=os.getpid(), user=whoami(), app=session.env.policy.app,
                    message=message, fleet=fleet.to_dict(), **plan.to_dict())  # fmt: skip
        outcome = Executor(ctx, plan).run(phase="rollback")
    finally:
        final = "succeeded" if outcome.ok else "failed"
        events.emit("rollout_finished", result=final, message=outcome.message,
                    app=session.env.policy.app)  # fmt: skip
        events.close()
        if interrupted:
            session.journal.set_current(None)
        record = _record(
            plan, final, message or "rollback", started, time.time() - started, session.secrets()
        )
        # what was live is abandoned: a later rollback never lands on it
        record["abandoned"] = current if outcome.ok and current != target else None
        if interrupted:
            record["abandoned"] = interrupted.started.get("version")
            record["interrupted_rollout"] = interrupted.rollout
        if session.heartbeat:
            session.heartbeat.stop()
        session.lock.release(rollout_id, record)
    seconds = time.monotonic() - began
    if not outcome.ok:
        raise RolloutFailed(
            f"The rollback to {target} failed: {outcome.message} Run `inkdeploy status`."
        )
    switched = (ctx.traffic_switched - command_started) if ctx.traffic_switched else None
    note = f", traffic moved after {switched:.1f} s" if switched is not None else ""
    return RolloutResult(
        plan.rollout, "succeeded", target, current,
        f"Traffic is on {target} again ({seconds:.1f} s{note}).", seconds,
        traffic_switched_s=switched,
    )  # fmt: skip
