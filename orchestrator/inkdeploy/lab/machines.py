"""One lab host: its overlay filesystem, identity files, nspawn process and readiness."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from inkdeploy.errors import LabError
from inkdeploy.lab import cgroups
from inkdeploy.lab.inventory import APT_PROXY_PORT
from inkdeploy.lab.layout import LabLayout
from inkdeploy.lab.procs import container_init, find_nspawn, pid_alive
from inkdeploy.lab.system import run
from inkdeploy.remote import tcp_alive

BOOT_TIMEOUT = 90.0


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1


# ---- filesystem -------------------------------------------------------------------------------


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def mount_overlay(layout: LabLayout, host: str, image: Path) -> Path:
    hdir = layout.host_dir(host)
    for sub in ("upper", "work", "merged"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    merged = layout.merged(host)
    if not mounted(merged):
        opts = f"lowerdir={image},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)])
    return merged


def unmount_overlay(path: Path) -> None:
    if mounted(path) and run(["umount", str(path)], check=False).returncode != 0:
        run(["umount", "-l", str(path)])  # busy: detach now, the kernel frees it when unused


def host_public_key(layout: LabLayout, host: str) -> str:
    """The host's SSH host key, generated once on the controller so known_hosts is exact."""
    key = layout.host_dir(host) / "ssh_host_ed25519_key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host}", "-f", str(key)])
    return key.with_suffix(".pub").read_text().strip()


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def write_identity(layout: LabLayout, spec: HostSpec, etc_hosts: str, authorized_key: str) -> None:
    """Hostname, address, host keys, root's authorized key, the apt proxy: what a cloud VM's
    first boot would set up. Written into the host's own overlay layer."""
    root = layout.merged(spec.name)
    _write(root / "etc/hostname", f"{spec.name}\n")
    _write(root / "etc/hosts", etc_hosts)
    machine_id = root / "etc/machine-id"
    if not machine_id.exists() or not machine_id.read_text().strip():
        _write(machine_id, uuid.uuid4().hex + "\n", 0o444)
    _write(root / "etc/resolv.conf", "# lab hosts resolve each other through /etc/hosts\n")
    _write(
        root / "etc/systemd/network/10-lab.network",
        "# Written by inkdeploy lab: the host's static address on the lab network.\n"
        "[Match]\nKind=veth\n\n[Network]\n"
        f"Address={spec.address}/{spec.subnet.prefixlen}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
    )
    _write(
        root / "etc/apt/apt.conf.d/00inkdeploy-proxy",
        f'Acquire::http::Proxy "http://{spec.gateway}:{APT_PROXY_PORT}";\n',
    )
    key = layout.host_dir(spec.name) / "ssh_host_ed25519_key"
    _write(root / "etc/ssh/ssh_host_ed25519_key", key.read_text(), 0o600)
    _write(root / "etc/ssh/ssh_host_ed25519_key.pub", key.with_suffix(".pub").read_text())
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(ssh_dir / "authorized_keys", authorized_key.strip() + "\n", 0o600)


def render_etc_hosts(hosts: dict[str, ipaddress.IPv4Address]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ""]
    lines += [f"{addr}\t{name}" for name, addr in sorted(hosts.items())]
    return "\n".join(lines) + "\n"


# ---- processes --------------------------------------------------------------------------------


def nspawn_pid(layout: LabLayout, host: str) -> int | None:
    return find_nspawn(layout.machine(host)).get(layout.machine(host))


def init_pid(layout: LabLayout, host: str) -> int | None:
    pid = nspawn_pid(layout, host)
    return container_init(pid) if pid else None


def boot(layout: LabLayout, spec: HostSpec) -> int:
    """Start the host's systemd in a container attached to the lab bridge; return nspawn's pid."""
    console = layout.console_log(spec.name)
    with console.open("ab") as log:
        log.write(f"\n===== boot {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                f"--directory={layout.merged(spec.name)}",
                "--boot",
                "--register=no",
                "--keep-unit",
                f"--network-bridge={layout.bridge}",
                f"--machine={layout.machine(spec.name)}",
                f"--hostname={spec.name}",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                # Arguments after the options go to the host's systemd: show boot and shutdown
                # progress on the console, so the console log says what failed.
                "--",
                "--show-status=yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: cgroups.enter(layout.name, spec.name),
        )
    return proc.pid


def console_tail(layout: LabLayout, host: str, lines: int = 25) -> str:
    try:
        text = layout.console_log(host).read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def power_off(layout: LabLayout, host: str, timeout: float = 30.0) -> None:
    """Clean shutdown: nspawn passes SIGTERM on as a poweroff request to the host's systemd."""
    pid = nspawn_pid(layout, host)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        power_cut(layout, host)


def power_cut(layout: LabLayout, host: str) -> None:
    """Hard power cut: SIGKILL the host's PID 1, which ends every process in it at once."""
    pid = nspawn_pid(layout, host)
    if pid is None:
        return
    init = container_init(pid)
    os.kill(init or pid, signal.SIGKILL)
    if not _wait_gone(pid, 10):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)


# ---- readiness --------------------------------------------------------------------------------


def ssh_command(layout: LabLayout, host: str, command: str, timeout: float = 60) -> list[str]:
    return [
        "ssh",
        "-F",
        str(layout.ssh_config),
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={min(10, int(timeout))}",
        host,
        command,
    ]


def ssh_run(
    layout: LabLayout, host: str, command: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return run(ssh_command(layout, host, command, timeout), check=False, timeout=timeout)


def wait_ready(layout: LabLayout, spec: HostSpec, timeout: float = BOOT_TIMEOUT) -> str:
    """Wait until sshd answers and systemd has finished booting; return the system state."""
    deadline = time.monotonic() + timeout
    while not tcp_alive(str(spec.address), 22, 0.5):
        if nspawn_pid(layout, spec.name) is None:
            raise LabError(
                f"Host {spec.name} stopped while booting; its console log ends with:",
                detail=console_tail(layout, spec.name),
            )
        if time.monotonic() > deadline:
            raise LabError(
                f"Host {spec.name} did not answer SSH on {spec.address}:22 within {timeout:.0f} s; "
                "its console log ends with:",
                detail=console_tail(layout, spec.name),
            )
        time.sleep(0.2)
    remaining = max(5.0, deadline - time.monotonic())
    proc = ssh_run(
        layout,
        spec.name,
        f"timeout {int(remaining)} systemctl is-system-running --wait",
        remaining + 5,
    )
    state = proc.stdout.strip() or "unknown"
    if proc.returncode not in (0, 1) or state not in ("running", "degraded"):
        raise LabError(
            f"Host {spec.name} answers SSH but systemd is '{state}' after {timeout:.0f} s.",
            detail=(proc.stderr.strip() + "\n" + console_tail(layout, spec.name)).strip(),
        )
    return state


def failed_units(layout: LabLayout, host: str) -> list[str]:
    proc = ssh_run(layout, host, "systemctl list-units --failed --plain --no-legend --no-pager")
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def repair_failed_units(layout: LabLayout, host: str) -> list[str]:
    """Restart units that failed during boot (a known race of parallel boots); return the ones
    that are still failed afterwards."""
    units = failed_units(layout, host)
    if not units:
        return []
    ssh_run(layout, host, "systemctl reset-failed && systemctl restart " + " ".join(units))
    time.sleep(0.5)
    return failed_units(layout, host)
