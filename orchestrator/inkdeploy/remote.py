"""The orchestrator's fast path to the fleet: one SSH command per host, in parallel, over a
persistent connection, with no Ansible in between.

A playbook costs a few seconds before its first task (interpreter start, inventory, plugin
loading) and about 0.35 s per task round trip; the steps a rollback waits for (read the fleet,
take the lock, cancel a pending stop, move the weights) are each one small action per host.
Here each is one `ssh HOST python3 -c BOOT` whose standard input carries a payload (a
self-contained Python file from playbooks/rollout/library or inkdeploy/payloads) and its
parameters; the answer is one JSON object on standard output. Nothing is installed on the hosts.

Connection settings come from the inventory (ansible_host, ansible_user, ansible_port, the
private key and ansible_ssh_common_args/extra_args), so the same hosts, keys and known_hosts
are used as by Ansible. A host whose settings this path cannot honour (another connection
plugin, a become password, values that are Jinja templates) has no fast path: callers then run
the equivalent playbook (`Remote.usable`).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inkdeploy.errors import InkdeployError

LIBRARY = Path(__file__).resolve().parents[2] / "playbooks" / "rollout" / "library"
PAYLOADS = Path(__file__).resolve().parent / "payloads"

# Runs on the host: read {"name", "source", "params"} from stdin, execute the payload's source
# and print what its run(params) returns as JSON.
BOOT = (
    "import json,sys;d=json.load(sys.stdin);g={'__name__':'inkdeploy_payload'};"
    "exec(compile(d['source'],d['name'],'exec'),g);"
    "json.dump(g['run'](d['params']),sys.stdout)"
)

# Kept open between commands (and for a minute after the orchestrator exits), like Ansible's
# ControlPersist: a command on an open connection costs one round trip, not a handshake.
CONTROL_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inkdeploy" / "cp"
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "ControlMaster=auto",
    "-o", "ControlPersist=60s",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip


# Reads (status, the fleet, the lock's holder) are asked with short timeouts so that a dead host
# costs little. A host that misses one but still accepts TCP on its SSH port is alive and slow (a
# starved CPU, a swapping host), not down: a read passes READ_PATIENCE_S and is asked once more
# with that long. Never for changes: an attempt that timed out may have been carried out.
READ_PATIENCE_S = 15.0
ALIVE_PROBE_S = 1.0


def tcp_alive(address: str, port: int, timeout_s: float = ALIVE_PROBE_S) -> bool:
    """Whether ADDRESS accepts a TCP connection on PORT within TIMEOUT_S."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class RemoteError(InkdeployError):
    """A payload failed or its host did not answer."""

    def __init__(
        self, host: str, message: str, unreachable: bool = False, refused: bool = False
    ) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.reason = message
        self.unreachable = unreachable
        # the payload itself said no (bad weights, nginx -t failed), as the playbook would
        self.refused = refused


@dataclass(frozen=True)
class Connection:
    host: str
    address: str
    user: str | None
    port: int | None
    key_file: str | None
    extra_args: tuple[str, ...]
    sudo: bool

    def argv(self, connect_timeout_s: float) -> list[str]:
        CONTROL_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = ["ssh", *SSH_OPTIONS, "-o", f"ControlPath={CONTROL_DIR}/%C"]
        argv += ["-o", f"ConnectTimeout={max(1, round(connect_timeout_s))}"]
        if self.user:
            argv += ["-l", self.user]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.key_file:
            argv += ["-i", self.key_file]
        return [*argv, *self.extra_args, self.address]


def _first(hostvars: dict[str, Any], *names: str) -> Any:
    for name in names:
        if hostvars.get(name) not in (None, ""):
            return hostvars[name]
    return None


def connection(host: str, hostvars: dict[str, Any]) -> Connection | None:
    """How to reach HOST without Ansible, or None when its settings need Ansible itself."""
    kind = hostvars.get("ansible_connection", "ssh")
    if kind not in ("ssh", "smart", "paramiko"):
        return None
    if _first(hostvars, "ansible_become_password", "ansible_become_pass", "ansible_sudo_pass"):
        return None
    values = {
        "address": _first(hostvars, "ansible_host", "ansible_ssh_host") or host,
        "user": _first(hostvars, "ansible_user", "ansible_ssh_user"),
        "port": _first(hostvars, "ansible_port", "ansible_ssh_port"),
        "key": _first(hostvars, "ansible_ssh_private_key_file", "ansible_private_key_file"),
        "common": hostvars.get("ansible_ssh_common_args") or "",
        "extra": hostvars.get("ansible_ssh_extra_args") or "",
        "method": hostvars.get("ansible_become_method", "sudo"),
    }
    if any("{{" in str(v) or "{%" in str(v) for v in values.values()):
        return None
    user = str(values["user"]) if values["user"] else None
    if values["method"] != "sudo" and user != "root":
        return None
    return Connection(
        host=host,
        address=str(values["address"]),
        user=user,
        port=int(values["port"]) if values["port"] else None,
        key_file=str(values["key"]) if values["key"] else None,
        extra_args=(*shlex.split(str(values["common"])), *shlex.split(str(values["extra"]))),
        sudo=user != "root",
    )


@dataclass
class Reply:
    host: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def unreachable(self) -> bool:
        return self.rc == 255

    def problem(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {self.rc}"
        return f"did not answer over SSH ({last})" if self.unreachable else last


class Remote:
    """Commands and payloads on the hosts of one inventory, in parallel."""

    def __init__(self, hostvars: dict[str, dict[str, Any]], timeout_s: float = 30.0) -> None:
        self.connections = {h: connection(h, v) for h, v in hostvars.items()}
        self.timeout_s = timeout_s

    def usable(self, hosts: list[str] | tuple[str, ...]) -> bool:
        return all(self.connections.get(h) for h in hosts)

    def command(
        self,
        host: str,
        argv: list[str],
        stdin: str = "",
        timeout_s: float | None = None,
        patience_s: float = 0.0,
    ) -> Reply:
        """ARGV on HOST within TIMEOUT_S. PATIENCE_S (reads only): when that passes and the host
        still accepts TCP on its SSH port, ask once more and wait that long."""
        conn = self.connections.get(host)
        if conn is None:
            raise RemoteError(host, "has no fast path (see inkdeploy/remote.py)")
        timeout = timeout_s or self.timeout_s
        remote = (["sudo", "-n", "--"] if conn.sudo else []) + argv
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [*conn.argv(min(10.0, timeout)), shlex.join(remote)],
                input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            if patience_s > timeout and tcp_alive(conn.address, conn.port or 22):
                again = self.command(host, argv, stdin, patience_s)
                again.seconds = time.monotonic() - started
                if again.unreachable and again.stderr.startswith("no answer within"):
                    again.stderr = (
                        f"no answer within {timeout:.0f} s, nor {patience_s:.0f} s more "
                        "(the host accepts TCP on its SSH port: alive but too slow)"
                    )
                return again
            return Reply(host, 255, "", f"no answer within {timeout:.0f} s", timeout)
        return Reply(host, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    def commands(
        self, argvs: dict[str, list[str]], timeout_s: float | None = None, patience_s: float = 0.0
    ) -> dict[str, Reply]:
        if not argvs:
            return {}
        with ThreadPoolExecutor(max_workers=min(32, len(argvs))) as pool:
            futures = {
                h: pool.submit(self.command, h, a, "", timeout_s, patience_s)
                for h, a in argvs.items()
            }
            return {h: f.result() for h, f in futures.items()}

    def payload(
        self,
        name: str,
        params: dict[str, dict[str, Any]],
        timeout_s: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Run payload NAME (a file of playbooks/rollout/library or inkdeploy/payloads with a
        run(params) function) on every host of PARAMS with that host's parameters. Returns
        host -> the payload's result; raises RemoteError for the first host (in order) that
        failed, after all have finished."""
        results: dict[str, dict[str, Any]] = {}
        for host, result in self.payload_each(name, params, timeout_s).items():
            if isinstance(result, RemoteError):
                raise result
            results[host] = result
        return results

    def payload_each(
        self,
        name: str,
        params: dict[str, dict[str, Any]],
        timeout_s: float | None = None,
        patience_s: float = 0.0,
    ) -> dict[str, dict[str, Any] | RemoteError]:
        """Like payload(), with each host's failure returned in place of its result.
        PATIENCE_S: for a payload that only reads (see command)."""
        source = _payload_source(name)
        if not params:
            return {}

        def one(host: str) -> Reply:
            body = json.dumps({"name": name, "source": source, "params": params[host]})
            return self.command(host, ["python3", "-c", BOOT], body, timeout_s, patience_s)

        with ThreadPoolExecutor(max_workers=min(32, len(params))) as pool:
            futures = {h: pool.submit(one, h) for h in params}
            replies = {h: f.result() for h, f in futures.items()}
        return {host: _result(name, reply) for host, reply in replies.items()}


def _result(name: str, reply: Reply) -> dict[str, Any] | RemoteError:
    if reply.rc != 0:
        return RemoteError(reply.host, reply.problem(), reply.unreachable)
    try:
        result = json.loads(reply.stdout)
    except ValueError:
        return RemoteError(reply.host, f"{name} answered no JSON: {reply.stdout[:200]!r}")
    if result.get("failed"):
        return RemoteError(reply.host, str(result.get("msg") or f"{name} failed"), refused=True)
    return dict(result)


def _payload_source(name: str) -> str:
    for folder in (LIBRARY, PAYLOADS):
        path = folder / f"{name}.py"
        if path.is_file():
            return path.read_text()
    raise InkdeployError(f"No payload named {name}.")  # a programming error, not the user's
