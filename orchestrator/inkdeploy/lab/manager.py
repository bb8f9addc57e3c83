"""Lab operations: up, down, status and the fault verbs. The CLI calls these and prints."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from inkdeploy.errors import LabError
from inkdeploy.lab import aptproxy, cgroups, machines, network, system
from inkdeploy.lab.image import ensure_base_image
from inkdeploy.lab.inventory import (
    project_inventory_path,
    project_root,
    render_inventory,
    render_known_hosts,
    render_ssh_config,
)
from inkdeploy.lab.layout import DEFAULT_LAB, LabLayout, lab_root
from inkdeploy.lab.procs import find_nspawn
from inkdeploy.lab.secrets import lab_secrets, secret_names
from inkdeploy.lab.state import HostState, LabState, load_state, save_state
from inkdeploy.lab.topology import allocate_addresses, load_topology

DEFAULT_SUBNET = ipaddress.IPv4Network("10.77.0.0/24")
AUTO_SUBNET_POOL = ipaddress.IPv4Network("10.77.0.0/16")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def lab_lock(layout: LabLayout) -> Iterator[None]:
    """One lab command at a time per lab (two `lab up` at once would fight over the bridge)."""
    layout.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _preflight() -> None:
    system.require_root()
    system.require_tools()


def _load(layout: LabLayout) -> LabState:
    state = load_state(layout.state_file)
    if state is None:
        raise LabError(f"Lab '{layout.name}' is not up; run 'inkdeploy lab up' first.")
    return state


def _spec(state: LabState, host: str) -> machines.HostSpec:
    if host not in state.hosts:
        raise LabError(
            f"Lab '{state.name}' has no host '{host}'; its hosts are {', '.join(state.hosts)}."
        )
    return machines.HostSpec(host, state.hosts[host].address, state.subnet)


def all_lab_states() -> dict[str, LabState]:
    out: dict[str, LabState] = {}
    root = lab_root()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and (folder / "state.json").exists():
                with contextlib.suppress(LabError):
                    st = load_state(folder / "state.json")
                    if st:
                        out[st.name] = st
    return out


def choose_subnet(
    layout: LabLayout,
    requested: ipaddress.IPv4Network | None,
    state: LabState | None,
    topology_subnet: ipaddress.IPv4Network | None,
) -> ipaddress.IPv4Network:
    if state is not None:
        if requested is not None and requested != state.subnet:
            raise LabError(
                f"Lab '{layout.name}' already runs on {state.subnet}; run 'inkdeploy lab down "
                f"--lab {layout.name}' before moving it to {requested}."
            )
        return state.subnet
    others = [
        (f"lab '{name}'", st.subnet) for name, st in all_lab_states().items() if name != layout.name
    ]
    in_use = system.system_networks(exclude_links=[layout.bridge]) + others
    wanted = (
        requested or topology_subnet or (DEFAULT_SUBNET if layout.name == DEFAULT_LAB else None)
    )
    if wanted is not None:
        clash = system.subnet_conflict(wanted, in_use)
        if clash:
            raise LabError(
                f"Subnet {wanted} is already in use ({clash}); pick another with --subnet."
            )
        return wanted
    for candidate in AUTO_SUBNET_POOL.subnets(new_prefix=24):
        if candidate != DEFAULT_SUBNET and not system.subnet_conflict(candidate, in_use):
            return candidate
    raise LabError(f"No free /24 left in {AUTO_SUBNET_POOL}; give one with --subnet.")


@dataclass
class UpResult:
    state: LabState
    booted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    repaired: dict[str, list[str]] = field(default_factory=dict)
    inventory: Path | None = None
    seconds: float = 0.0


def up(
    lab: str,
    topology_name: str,
    subnet: ipaddress.IPv4Network | None = None,
    inventory_out: Path | None = None,
    log: Log = _quiet,
) -> UpResult:
    started = time.monotonic()
    _preflight()
    layout = LabLayout.for_lab(lab)
    topology = load_topology(topology_name)
    system.require_free_space(layout.root.parent)
    with lab_lock(layout):
        state = load_state(layout.state_file)
        if state is None:
            _teardown(layout, log=_quiet)  # leftovers of an interrupted run
        net = choose_subnet(layout, subnet, state, topology.subnet)
        previous = {h: s.address for h, s in state.hosts.items()} if state else {}
        addresses = allocate_addresses(topology, net, previous)
        hosts = dict(state.hosts) if state else {}
        for name, spec in topology.hosts.items():
            old = hosts.get(name)
            hosts[name] = HostState(
                address=addresses[name],
                groups=spec.groups,
                partitioned=old.partitioned if old else False,
                loss_percent=old.loss_percent if old else None,
                delay_ms=old.delay_ms if old else None,
            )
        new_state = LabState(name=lab, topology=topology.name, subnet=net, hosts=hosts)
        image = ensure_base_image(log)
        layout.root.mkdir(parents=True, exist_ok=True)
        save_state(layout.state_file, new_state)
        _ensure_lab_key(layout)
        network.ensure_bridge(layout, new_state.gateway, net.prefixlen)
        aptproxy.ensure_apt_proxy(layout, new_state.gateway)
        keys = {h: machines.host_public_key(layout, h) for h in new_state.hosts}
        _write_client_files(layout, new_state, keys)

        result = UpResult(state=new_state)
        running = find_nspawn(layout.machine_prefix)
        etc_hosts = machines.render_etc_hosts({h: s.address for h, s in new_state.hosts.items()})
        authorized = layout.ssh_key.with_suffix(".pub").read_text()
        to_boot: list[machines.HostSpec] = []
        for name in new_state.hosts:
            spec = _spec(new_state, name)
            if layout.machine(name) in running:
                (layout.merged(name) / "etc/hosts").write_text(etc_hosts)
                result.kept.append(name)
                continue
            fresh = not (layout.host_dir(name) / "upper").exists()
            machines.mount_overlay(layout, name, image)
            machines.write_identity(layout, spec, etc_hosts, authorized)
            if fresh:
                _forget_cached_facts(name)
            to_boot.append(spec)
        if to_boot:
            log(f"Booting {len(to_boot)} host(s): {', '.join(s.name for s in to_boot)}")
        for spec in to_boot:
            machines.boot(layout, spec)
            # The host boots with a healthy network: faults belong to the previous power cycle.
            _clear_faults(new_state, spec.name)
        save_state(layout.state_file, new_state)
        with ThreadPoolExecutor(max_workers=max(1, len(to_boot))) as pool:
            outcomes = list(pool.map(lambda s: _ready_or_repair(layout, s), to_boot))
        for spec, repaired in zip(to_boot, outcomes, strict=True):
            result.booted.append(spec.name)
            if repaired:
                result.repaired[spec.name] = repaired
        result.inventory = _publish_inventory(layout, new_state, inventory_out)
        result.seconds = time.monotonic() - started
        return result


def _clear_faults(state: LabState, host: str) -> None:
    h = state.hosts[host]
    h.partitioned, h.loss_percent, h.delay_ms = False, None, None


def _ensure_lab_key(layout: LabLayout) -> None:
    if not layout.ssh_key.exists():
        layout.ssh_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        system.run(
            [
                "ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                "-C", f"inkdeploy-lab-{layout.name}", "-f", str(layout.ssh_key),
            ]
        )  # fmt: skip


def _write_client_files(layout: LabLayout, state: LabState, keys: dict[str, str]) -> None:
    layout.known_hosts.write_text(render_known_hosts(state, keys))
    layout.ssh_config.write_text(render_ssh_config(state, layout))


def _publish_inventory(layout: LabLayout, state: LabState, out: Path | None) -> Path:
    """Write the inventory (it holds the lab's secrets, so only root may read it)."""
    secrets = lab_secrets(layout.root / "secrets.json", secret_names(project_root()))
    text = render_inventory(state, layout, secrets)
    targets = [layout.inventory]
    extra = out or (project_inventory_path() if layout.name == DEFAULT_LAB else None)
    if extra is not None:
        targets.append(extra)
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600)
        target.chmod(0o600)
        target.write_text(text)
    return targets[-1]


def _forget_cached_facts(host: str) -> None:
    """A re-created host is a new machine: drop the Ansible facts cached for its name, in every
    inventory's directory of the fact cache (plugins/cache/inventory_jsonfile.py; ansible-core
    2.19 names the files s1_HOST)."""
    inv = project_inventory_path()
    if inv is None:
        return
    cache = inv.parents[2] / ".cache" / "ansible-facts"
    for name in (host, f"s1_{host}"):
        for cached in cache.glob(f"*/{name}"):
            cached.unlink(missing_ok=True)


def _ready_or_repair(layout: LabLayout, spec: machines.HostSpec) -> list[str]:
    """Wait for the host; if systemd is degraded, restart the failed units, then reboot once.

    Returns the units that had to be repaired (empty when the boot was clean)."""
    state = machines.wait_ready(layout, spec)
    if state == "running":
        return []
    first = machines.failed_units(layout, spec.name)
    if not machines.repair_failed_units(layout, spec.name):
        return first
    machines.power_off(layout, spec.name, timeout=15)
    machines.boot(layout, spec)
    if machines.wait_ready(layout, spec) == "running":
        return first
    still = machines.repair_failed_units(layout, spec.name)
    if still:
        raise LabError(
            f"Host {spec.name} boots degraded: unit(s) {', '.join(still)} failed even after a "
            f"restart and a reboot; see 'inkdeploy lab ssh {spec.name}' and "
            f"'journalctl -u {still[0]}'.",
            detail=machines.console_tail(layout, spec.name),
        )
    return first


# ---- down ---------------------------------------------------------------------------------------


def down(lab: str, log: Log = _quiet) -> bool:
    """Remove everything the lab created. Returns False if there was nothing to remove."""
    system.require_root()
    layout = LabLayout.for_lab(lab)
    with lab_lock(layout):
        existed = layout.root.exists() or network.link_exists(layout.bridge)
        _teardown(layout, log)
    layout.lock_file.unlink(missing_ok=True)
    return existed


def _teardown(layout: LabLayout, log: Log) -> None:
    network.stop_delayd(layout)
    procs = find_nspawn(layout.machine_prefix)
    hosts = [m.removeprefix(layout.machine_prefix) for m in procs]
    if hosts:
        log(f"Powering off {', '.join(hosts)}")
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(lambda h: machines.power_off(layout, h, timeout=15), hosts))
    for mount in _mounts_under(layout.root):
        machines.unmount_overlay(mount)
    network.remove_loss_tables(layout)
    for link in network.lab_links(layout):
        system.run(["ip", "link", "del", link], check=False)
    aptproxy.stop_apt_proxy(layout)
    network.remove_bridge(layout)
    cgroups.remove(layout.name)
    inv = project_inventory_path()
    if inv is not None and inv.exists() and f"for lab '{layout.name}'" in inv.read_text()[:300]:
        inv.unlink()
    if layout.root.exists():
        shutil.rmtree(layout.root)


def _mounts_under(root: Path) -> list[Path]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    # Deepest first, so nested mounts come off before their parents.
    return [Path(p) for p in sorted((p for p in points if p.startswith(prefix)), reverse=True)]


def known_labs() -> list[str]:
    """Labs with state on disk, or with leftovers (a bridge or a running host) but no state."""
    names = set(all_lab_states())
    root = lab_root()
    if root.is_dir():
        names.update(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for machine in find_nspawn("ink-"):
        names.add(machine.split("-")[1])
    for link in _ink_bridges():
        names.add(link.removeprefix("ink-"))
    return sorted(n for n in names if n)


def _ink_bridges() -> list[str]:
    import json

    links = json.loads(system.run(["ip", "-j", "link", "show", "type", "bridge"]).stdout or "[]")
    return [link["ifname"] for link in links if link["ifname"].startswith("ink-")]


# ---- status -------------------------------------------------------------------------------------


@dataclass
class HostStatus:
    name: str
    address: str
    groups: list[str]
    power: str  # running | stopped
    system: str  # running | degraded | starting | unreachable | -
    network: str  # ok | partitioned | loss 5% | delay 200ms
    pid: int | None


def status(lab: str, probe: bool = True) -> tuple[LabState | None, list[HostStatus]]:
    layout = LabLayout.for_lab(lab)
    state = load_state(layout.state_file)
    if state is None:
        return None, []
    running = find_nspawn(layout.machine_prefix)

    def one(name: str) -> HostStatus:
        h = state.hosts[name]
        pid = running.get(layout.machine(name))
        sysstate = "-"
        if pid and probe:
            try:
                proc = machines.ssh_run(layout, name, "systemctl is-system-running", timeout=5)
                sysstate = proc.stdout.strip() or "unreachable"
            except LabError:  # timed out: partitioned, or too slow to answer
                sysstate = "unreachable"
        faults = []
        if h.partitioned:
            faults.append("partitioned")
        if h.loss_percent:
            faults.append(f"loss {h.loss_percent:g}%")
        if h.delay_ms:
            faults.append(f"delay {h.delay_ms}ms")
        return HostStatus(
            name=name,
            address=str(h.address),
            groups=h.groups,
            power="running" if pid else "stopped",
            system=sysstate,
            network=", ".join(faults) or "ok",
            pid=pid,
        )

    with ThreadPoolExecutor(max_workers=max(1, len(state.hosts))) as pool:
        rows = list(pool.map(one, state.hosts))
    return state, rows


# ---- fault verbs --------------------------------------------------------------------------------


def _running_spec(layout: LabLayout, state: LabState, host: str) -> machines.HostSpec:
    spec = _spec(state, host)
    if machines.nspawn_pid(layout, host) is None:
        raise LabError(f"Host {host} is not running; start it with 'inkdeploy lab start {host}'.")
    return spec


def kill(lab: str, host: str) -> None:
    _preflight()
    layout = LabLayout.for_lab(lab)
    with lab_lock(layout):
        state = _load(layout)
        _running_spec(layout, state, host)
        network.stop_delayd(layout, host)  # it holds the host's network namespace open
        machines.power_cut(layout, host)


def stop(lab: str, host: str) -> None:
    _preflight()
    layout = LabLayout.for_lab(lab)
    with lab_lock(layout):
        state = _load(layout)
        _running_spec(layout, state, host)
        network.stop_delayd(layout, host)
        machines.power_off(layout, host)


def start(lab: str, host: str) -> list[str]:
    _preflight()
    layout = LabLayout.for_lab(lab)
    with lab_lock(layout):
        state = _load(layout)
        spec = _spec(state, host)
        if machines.nspawn_pid(layout, host) is not None:
            return []
        machines.mount_overlay(layout, host, ensure_base_image())
        machines.boot(layout, spec)
        _clear_faults(state, host)
        save_state(layout.state_file, state)
        return _ready_or_repair(layout, spec)


def partition(lab: str, host: str, cut: bool) -> None:
    _preflight()
    layout = LabLayout.for_lab(lab)
    with lab_lock(layout):
        state = _load(layout)
        _running_spec(layout, state, host)
        network.set_partitioned(layout, host, cut)
        state.hosts[host].partitioned = cut
        if not cut:  # heal restores the network fully
            network.set_loss(layout, host, None)
            pid = machines.init_pid(layout, host)
            if pid and state.hosts[host].delay_ms:
                network.set_delay(layout, host, pid, None)
            state.hosts[host].loss_percent = None
            state.hosts[host].delay_ms = None
        save_state(layout.state_file, state)


def slow(lab: str, host: str, delay_ms: int | None, loss_percent: float | None) -> None:
    _preflight()
    layout = LabLayout.for_lab(lab)
    with lab_lock(layout):
        state = _load(layout)
        _running_spec(layout, state, host)
        pid = machines.init_pid(layout, host)
        if pid is None:
            raise LabError(f"Host {host} has no running init process; restart it.")
        network.set_delay(layout, host, pid, delay_ms)
        network.set_loss(layout, host, loss_percent)
        state.hosts[host].delay_ms = delay_ms or None
        state.hosts[host].loss_percent = loss_percent or None
        save_state(layout.state_file, state)


def ssh_argv(lab: str, host: str, command: list[str] | None = None) -> list[str]:
    layout = LabLayout.for_lab(lab)
    state = _load(layout)
    _spec(state, host)
    argv = ["ssh", "-F", str(layout.ssh_config), host]
    if command:
        import shlex

        argv.append(shlex.join(command))
    return argv
