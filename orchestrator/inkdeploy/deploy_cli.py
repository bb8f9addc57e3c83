"""`inkdeploy rollout|plan|status|rollback|history|lock|pause|resume|promote|abort`: parse,
call inkdeploy.deploy, print (rich for people, JSON for automation)."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from json import dumps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from inkdeploy import deploy
from inkdeploy.config import Strategy
from inkdeploy.console import err, friendly, out, print_json
from inkdeploy.errors import InkdeployError
from inkdeploy.events import Event
from inkdeploy.fleet import SLOTS, Fleet
from inkdeploy.gates.prometheus import render
from inkdeploy.ops.db import describe_lag
from inkdeploy.ops.overview import DataTier, data_tier, expected_queues, worker_lines
from inkdeploy.plan import Plan
from inkdeploy.preflight import run_preflight
from inkdeploy.state.lock import describe_holder, holder_info, staleness

Inventory = Annotated[
    Path, typer.Option("--inventory", "-i", help="The environment's inventory (inventories/ENV).")
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON lines).")]


class Display:
    """Live progress for people: one line per step and gate, a spinner with the current task."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.status: Status | None = None
        self.tasks = 0

    def __enter__(self) -> Display:
        if self.enabled:
            self.status = err.status("starting")
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status:
            self.status.stop()

    def progress(self, host: str, task: str, status: str) -> None:
        self.tasks += 1
        if self.status:
            self.status.update(f"[dim]{self.tasks} tasks[/] {host}: {task} ({status})")

    def event(self, event: Event) -> None:
        if not self.enabled:
            return
        d = event.data
        if event.type == "step_started":
            out.print(f"[bold]→[/] {escape(d.get('description', ''))}", highlight=False)
        elif event.type == "step_done" and d.get("seconds", 0) > 0:
            out.print(f"  [green]done[/] in {d['seconds']:.1f} s", highlight=False)
        elif event.type == "step_failed":
            out.print(f"  [red]failed:[/] {escape(str(d.get('message')))}", highlight=False)
        elif event.type == "gate":
            color = "green" if d.get("outcome") == "pass" else "red"
            out.print(
                f"  [{color}]gate {d.get('outcome')}[/] {escape(str(d.get('message')))}",
                highlight=False,
            )
        elif event.type in {"rollback_started", "paused", "approval_waiting", "warning"}:
            text = d.get("reason") or d.get("label") or d.get("message") or ""
            out.print(f"[yellow]{event.type.replace('_', ' ')}:[/] {escape(text)}", highlight=False)


def print_plan(plan: Plan, fleet: Fleet | None = None) -> None:
    out.print(
        f"[bold]{plan.strategy}[/] rollout of [bold]{plan.version}[/] "
        f"(live now: {plan.previous}), {len(plan.steps)} steps:",
        highlight=False,
    )
    for index, step in enumerate(plan.steps, 1):
        out.print(f"  {index:2}. {step.describe()}", highlight=False, soft_wrap=True, markup=False)
    for note in plan.notes:
        out.print(f"[dim]Note: {escape(note)}[/]", highlight=False)


def print_gates(session: deploy.Session, plan: Plan) -> None:
    """The gates and thresholds, with the plan's versions filled in."""
    policy = session.env.policy
    params = {"version": plan.version, "previous": plan.previous or ""}
    g = policy.http_gate
    expect = {k: v.format(**params) for k, v in g.expect_json.items()}
    lines = [
        f"Gates: HTTP {g.path} on each new slot -> {g.expect_status} {expect or ''} within "
        f"{g.max_latency_ms} ms, {g.retries} tries {g.interval_s:g} s apart"
    ]
    for pg in policy.prometheus_gates:
        lines.append(
            f"  Prometheus: {render(pg.name, **params)}: {render(pg.query, **params)} {pg.op} "
            f"{pg.threshold:g} (breaches allowed {pg.max_breach_ratio:.0%}, no data: {pg.no_data})"
        )
    if policy.judge.enabled and plan.strategy == "canary":
        j = policy.judge
        for m in j.metrics:
            lines.append(
                f"  Canary judge: {m.name}{' (critical)' if m.critical else ''}: "
                f"{render(m.query, version=plan.version)} vs the same for {plan.previous}; "
                f"worse if {m.worse} by > {m.tolerance:.0%} and > {m.min_effect:g}"
            )
        lines.append(
            f"  Judge: Mann-Whitney U at alpha {j.alpha}, pass >= {j.pass_score:g}, marginal >= "
            f"{j.marginal_score:g}, at least {j.min_samples} samples each, no data: {j.no_data}"
        )
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def _request(inventory: Path, version: str, strategy: Strategy | None, artifact: Path | None,
             message: str, lock_wait: float, json: bool,
             force: bool = False) -> deploy.RolloutRequest:  # fmt: skip
    return deploy.RolloutRequest(
        inventory, version, strategy, artifact, message, lock_wait, json, force=force
    )


def _finish(result: deploy.RolloutResult, json: bool) -> None:
    if json:
        # the last JSON line after the events: the outcome
        sys.stdout.write(dumps({"type": "result", "data": result.to_dict()}, default=str) + "\n")
    elif result.result == "succeeded":
        out.print(f"[green]{result.message}[/] ({result.seconds:.0f} s)", highlight=False)
    if result.result != "succeeded":
        if not json:
            err.print(f"[bold red]Rollout failed:[/] {escape(result.message)}", highlight=False)
        raise typer.Exit(4)


@friendly
def rollout_command(
    inventory: Inventory,
    version: Annotated[str, typer.Option(help="Release to roll out.")] = "",
    strategy: Annotated[
        str | None, typer.Option(help="rolling, blue-green or canary (default: the inventory's).")
    ] = None,
    artifact: Annotated[
        Path | None, typer.Option(help="Artifact (default dist/APP-V.tar.gz).")
    ] = None,
    plan_only: Annotated[
        bool, typer.Option("--plan", help="Print the plan, change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before starting.")] = False,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Why (kept in the lock and history).")
    ] = "",
    lock_wait: Annotated[float, typer.Option(help="Seconds to wait for the deploy lock.")] = 0.0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted rollout.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Start even if the pre-flight checks (database, Redis, alerts, LBs) fail.",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Roll out a release: rolling, blue-green or canary, gated, with automatic rollback."""
    display = Display(not json)
    if resume:
        with display:
            result = deploy.resume(inventory, json, display.progress, on_event=display.event)
        _finish(result, json)
        return
    parsed = _strategy(strategy)
    if not version:
        raise InkdeployError("Name the release to roll out with --version (e.g. --version 2.0.0).")
    request = _request(inventory, version, parsed, artifact, message, lock_wait, json, force)
    if plan_only:
        _plan(request, json)
        return

    def confirm(plan: Plan) -> bool:
        if yes or json or not sys.stdin.isatty():
            return True
        print_plan(plan)
        return typer.confirm("Start this rollout?")

    def ask(label: str) -> bool | None:
        if not sys.stdin.isatty() or json:
            return None  # wait for `inkdeploy promote|abort`
        return typer.confirm(f"Approve: {label}?")

    with display:
        result = deploy.rollout(request, display.progress, ask, confirm, display.event)
    _finish(result, json)


def _strategy(value: str | None) -> Strategy | None:
    if value is None:
        return None
    if value not in ("rolling", "blue-green", "canary"):
        raise InkdeployError(
            f"Unknown strategy {value!r}; use rolling, blue-green or canary.", exit_code=2
        )
    return value  # type: ignore[return-value]


def _plan(request: deploy.RolloutRequest, json: bool) -> None:
    session = deploy.Session.open(request.inventory)
    plan, fleet, _ = deploy.prepare(session, request)
    found = run_preflight(session.env, serving=frozenset(fleet.live_versions))
    if json:
        print_json({**plan.to_dict(), "preflight": found.to_dict()})
        return
    print_plan(plan, fleet)
    print_gates(session, plan)
    for check in found.checks:
        mark = "[green]ok[/]" if check["ok"] else "[red]problem[/]"
        out.print(f"Pre-flight {escape(check['name'])}: {mark} {escape(check['detail'])}",
                  highlight=False)  # fmt: skip
    for problem in found.problems:
        out.print(f"[red]{escape(problem)}[/]", highlight=False)
    out.print("[dim]Nothing was changed.[/]")


@friendly
def plan_command(
    inventory: Inventory,
    version: Annotated[str, typer.Option(help="Release to plan for.")],
    strategy: Annotated[str | None, typer.Option(help="rolling, blue-green or canary.")] = None,
    artifact: Annotated[
        Path | None, typer.Option(help="Artifact (default dist/APP-V.tar.gz).")
    ] = None,
    json: Json = False,
) -> None:
    """Print what a rollout would do (steps, batches, weights, gates); change nothing."""
    _plan(_request(inventory, version, _strategy(strategy), artifact, "", 0, json), json)


@friendly
def status_command(inventory: Inventory, json: Json = False) -> None:
    """The whole stack: per app host and slot the version, health and LB weight (hosts that do
    not answer within a few seconds shown as unreachable), the Celery workers per queue with
    their release, the running rollout and the lock; Patroni's leader, replicas and lag (bytes
    and seconds), etcd's health; the Redis master as the sentinels agree on it; the alerts
    firing now."""
    began = time.monotonic()
    session = deploy.Session.open(inventory)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-tier") as pool:
        tier = pool.submit(data_tier, session.env)
        fleet = session.read_fleet(
            tolerate_unreachable=True, read_timeout_s=deploy.STATUS_READ_TIMEOUT_S
        )
        data = tier.result()
    current = session.journal.current() or None
    view = session.journal.read(current) if current else None
    rollout: dict[str, Any] | None = None
    if view and view.started:
        rollout = {
            "rollout": view.rollout,
            "version": view.started.get("version"),
            "previous": view.started.get("previous"),
            "strategy": view.started.get("strategy"),
            "state": "running" if view.active else ("stopped" if view.stopped else "interrupted"),
            "rolling_back": view.must_roll_back and not view.stopped,
            "step": view.next_step + 1,
            "steps": len(view.steps),
            "step_description": view.steps[view.next_step].describe()
            if view.next_step < len(view.steps)
            else "",
            "failed": view.failed,
            "paused": view.paused if view.active else None,
        }
    holder = session.lock_holder
    stale = staleness(holder, session.env.policy.lock_stale_s) if holder else ""
    if json:
        print_json({"fleet": fleet.to_dict(), "rollout": rollout,
                    "lock": {"holder": holder, "stale": stale}, **data.to_dict(),
                    "seconds": round(time.monotonic() - began, 3)})  # fmt: skip
        return
    no_lb = bool(fleet.lb_unreachable) and not fleet.lb_hosts  # no load balancer answered
    table = Table(title=f"{session.env.policy.app} on {session.env.name}")
    for column in ("host", "slot", "version", "unit", "health", "weight"):
        table.add_column(column)
    for host in fleet.hosts:
        for slot in SLOTS:
            s = fleet.slot(host, slot)
            health = "ok" if s.healthy else ("-" if not s.active else f"bad ({s.health_status})")
            unit = "active" if s.active else "stopped"
            if host in fleet.unreachable:
                unit, health = "[red]unreachable[/]", "?"
            weight = str(s.weight) + (" live" if s.serving else "")
            if no_lb:
                weight = "?"
            elif host in fleet.drained:
                weight += " (drained)"
            table.add_row(host, slot, s.version or "-", unit, health, weight)
    out.print(table)
    out.print(f"Live: {'unknown' if no_lb else fleet.live_versions or 'nothing'}")
    for level, line in worker_lines(fleet, expected_queues(session.env)):
        out.print(f"[{level}]{escape(line)}[/]" if level else escape(line), highlight=False)
    if no_lb:
        names = ", ".join(fleet.lb_unreachable)
        out.print(f"[red]No load balancer answered ({escape(names)})[/]: the weights are unknown "
                  "and clients cannot reach the site through them; bring one back (power, "
                  "network, nginx) before anything else.")  # fmt: skip
    for lb in fleet.lb_unreachable if fleet.lb_hosts else ():
        out.print(f"[red]Load balancer {escape(lb)} is unreachable[/]: the weights above are the "
                  "other load balancers'; take it out of DNS until it is back.")  # fmt: skip
    for lb in fleet.weights_disagree:
        out.print(f"[yellow]Load balancer {escape(lb)} serves other weights than "
                  f"{escape(fleet.lb_hosts[0])}[/]: the next rollback or rollout sets every "
                  "load balancer.")  # fmt: skip
    if fleet.lock_silent:
        out.print(f"[yellow]Deploy lock hosts that did not answer: "
                  f"{escape(', '.join(fleet.lock_silent))}[/] (a majority did).")  # fmt: skip
    if rollout and view:
        if view.active:
            head = (
                f"Rollout {rollout['rollout']} ({rollout['strategy']} to {rollout['version']}) "
                f"running at step {rollout['step']}/{rollout['steps']}: "
                f"{rollout['step_description']}"
            )
        else:
            head = deploy.interrupted_summary(view) + "."
        out.print(f"[yellow]{escape(head)}[/]", highlight=False)
        if rollout["paused"]:
            out.print(f"[yellow]{escape(describe_pause(rollout['paused']))}[/]", highlight=False)
        if not view.active:
            advice = deploy.interrupted_advice(view)
            out.print(escape(advice[0].upper() + advice[1:]) + ".", highlight=False)
    if holder:
        out.print(f"Lock: {describe_holder(holder, session.env.policy.lock_stale_s)}",
                  highlight=False, markup=False)  # fmt: skip
    else:
        out.print("Lock: free")
    print_data_tier(data)


def print_data_tier(data: DataTier) -> None:
    db, redis = data.db, data.redis
    if db.members or db.unreachable:
        members = ", ".join(f"{m.name} {m.role} {m.state} (lag {describe_lag(m)})"
                            for m in db.members) or "none answered"  # fmt: skip
        sync = ", ".join(db.sync_standbys) or "none"
        out.print(escape(f"PostgreSQL: leader {db.leader or 'none'}; {members}; sync standby: "
                         f"{sync}"), highlight=False)  # fmt: skip
    if data.etcd.size:
        out.print(escape(data.etcd.describe()), highlight=False)
    if redis.said or redis.unreachable:
        replicas = ", ".join(f"{r.host or r.address} link {r.link}" for r in redis.replicas)
        out.print(escape(f"Redis: master {redis.master_host or redis.master or 'none agreed'}"
                         f"; replicas: {replicas or 'none'}"), highlight=False)  # fmt: skip
    backup = data.backup
    if backup is not None:
        out.print(escape(backup.describe(time.time())), highlight=False)
    silent = {**data.etcd.unreachable, **db.unreachable, **redis.unreachable,
              **(backup.unreachable if backup else {})}  # fmt: skip
    for host, why in silent.items():
        out.print(f"[yellow]{escape(host)} did not answer: {escape(why)}[/]", highlight=False)
    for problem in (
        db.problems + data.etcd.problems + redis.problems + (backup.problems if backup else [])
    ):
        out.print(f"[red]{escape(problem)}[/]", highlight=False)
    if data.alerts_unknown:
        out.print(f"[yellow]Alerts unknown: {escape(data.alerts_unknown)}[/]", highlight=False)
    elif data.alerts:
        out.print(f"[red]Alerts firing ({len(data.alerts)}):[/]")
        for alert in data.alerts:
            out.print(f"  {escape(alert.describe())}", highlight=False)
    else:
        out.print("Alerts firing: none")


def describe_pause(paused: dict[str, Any]) -> str:
    """'Paused for 42 s (gate ...): waiting for resume, promote or abort; rolls back in 1758 s.'"""
    since = float(paused.get("since") or time.time())
    waited = time.time() - since
    why = (
        paused.get("reason")
        or paused.get("label")
        or (f"by {paused['by']}" if paused.get("by") else "")
    )
    head = "Waiting for approval" if paused.get("type") == "approval_waiting" else "Paused"
    text = f"{head} for {waited:.0f} s" + (f" ({why})" if why else "")
    text += ": `inkdeploy resume`, `promote` or `abort`"
    if paused.get("timeout_s"):
        left = max(0.0, float(paused["timeout_s"]) - waited)
        text += f"; rolls back by itself in {left:.0f} s"
    return text + "."


@friendly
def rollback_command(
    inventory: Inventory,
    to: Annotated[str | None, typer.Option("--to", help="Release to go back to.")] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    json: Json = False,
) -> None:
    """Back to the previous (or named) release that is still installed: an LB switch when its
    slot still runs; no gates to wait for."""
    display = Display(not json)
    with display:
        result = deploy.rollback(inventory, to, message, json, display.progress, display.event)
    _finish(result, json)


@friendly
def history_command(inventory: Inventory, json: Json = False) -> None:
    """Releases and rollouts: who, when, strategy, result, why."""
    session = deploy.Session.open(inventory)
    rows = deploy.history(session)
    if json:
        print_json(rows)
        return
    table = Table(title="Rollouts (oldest first)")
    for column in ("when (UTC)", "who", "kind", "strategy", "version", "from", "result", "why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.get("started", 0)))
        table.add_row(when, row.get("user", "?"), row.get("kind", ""), row.get("strategy", ""),
                      row.get("version", ""), row.get("previous") or "-", row.get("result", ""),
                      (row.get("reason") or "")[:300])  # fmt: skip
    out.print(table)


def _control(action: str) -> Any:
    @friendly
    def command(inventory: Inventory) -> None:
        from inkdeploy.state.journal import Journal, state_dir
        from inkdeploy.state.lock import whoami

        journal = Journal(state_dir(inventory))
        current = journal.current()
        view = journal.read(current) if current else None
        if not view or not view.active:
            raise InkdeployError(f"No rollout is running from this controller to {action}.")
        journal.request(action, whoami())
        out.print(f"Asked rollout {current} to {action}.")

    command.__doc__ = {
        "pause": "Hold a running rollout before its next step (traffic stays as it is).",
        "resume": "Continue a paused rollout (also approves a manual approval step).",
        "promote": "Skip the remaining canary steps and analysis: all traffic to the new release.",
        "abort": "Stop a running rollout and return traffic to the last good release.",
    }[action]
    return command


lock_app = typer.Typer(no_args_is_help=True, help="The deploy lock on the fleet.")


@lock_app.command("status")
@friendly
def lock_status(inventory: Inventory, json: Json = False) -> None:
    """Who holds the deploy lock, since when, and whether it looks stale."""
    session = deploy.Session.open(inventory)
    holder = session.lock.query().get("holder") or {}
    if json:
        stale = staleness(holder, session.env.policy.lock_stale_s) if holder else ""
        print_json({"holder": holder, "stale": stale})
        return
    out.print(describe_holder(holder, session.env.policy.lock_stale_s) if holder else "free",
              highlight=False, markup=False)  # fmt: skip


@lock_app.command("acquire")
@friendly
def lock_acquire(
    inventory: Inventory,
    message: Annotated[str, typer.Option("--message", "-m", help="Why (shown to others).")],
) -> None:
    """Hold the deploy lock by hand (a freeze): rollouts are refused until it is released."""
    session = deploy.Session.open(inventory)
    holder = holder_info(f"manual-{int(time.time())}", "", "", message)
    holder["pid"] = None  # not tied to this short-lived process
    session.lock.acquire(holder)
    out.print(f"Deploy lock held: {message}")


@lock_app.command("release")
@friendly
def lock_release(
    inventory: Inventory,
    force: Annotated[
        bool, typer.Option(help="Release it whoever holds it (a stale lock).")
    ] = False,
) -> None:
    """Release a lock taken with `lock acquire` (or, with --force, any lock)."""
    session = deploy.Session.open(inventory)
    holder = session.lock.query().get("holder") or {}
    if not holder:
        out.print("The deploy lock is free.")
        return
    manual = str(holder.get("rollout", "")).startswith(("manual-", "maintenance-"))
    if not (manual or force):
        raise InkdeployError(
            "The lock belongs to a rollout: "
            f"{describe_holder(holder, session.env.policy.lock_stale_s)}; "
            "pass --force if it is stale."
        )
    session.lock.release(str(holder.get("rollout", "")), force=True)
    if manual:
        out.print("Deploy lock released.")
    else:
        out.print(
            "Deploy lock released. If that rollout still runs, it stops at its next step "
            "(within a lease renewal) without rolling back; check with `inkdeploy status`."
        )


def register(app: typer.Typer) -> None:
    app.command("rollout")(rollout_command)
    app.command("plan")(plan_command)
    app.command("status")(status_command)
    app.command("rollback")(rollback_command)
    app.command("history")(history_command)
    for action in ("pause", "resume", "promote", "abort"):
        app.command(action)(_control(action))
    app.add_typer(lock_app, name="lock")
