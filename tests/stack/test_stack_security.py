"""What an attacker who reached one lab host finds (docs/security.md): the default-deny
firewall derived from the inventory, no Prometheus lifecycle API, sshd without passwords, and
no secret in any host's logs after site.yml, the rollouts and the rollbacks of the stack run
(this module runs after test_stack_rollout.py).

Each test prints how many checks it made and how many bad inputs it tried (-rP shows it)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from inkdeploy.lab.drill import inventory_address
from inkdeploy.runner import PRIVATE_PREFIX

from .conftest import Stack

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
COMMON = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())
PROBE_TIMEOUT_S = 3
PG_TLS_DIR = "/etc/postgresql/15/inkdeploy/tls"  # roles/postgresql: postgresql_config_dir/tls


def _groups(inventory: Path) -> dict[str, list[str]]:
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(inventory), "--list"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    data = yaml.safe_load(proc.stdout)

    def hosts(group: str) -> set[str]:
        found = set(data.get(group, {}).get("hosts", []))
        for child in data.get(group, {}).get("children", []):
            found |= hosts(child)
        return found

    names = [g for g in data if g not in ("_meta", "all", "ungrouped")]
    return {g: sorted(hosts(g)) for g in names} | {"all": sorted(hosts("all"))}


def expected_firewall(groups: dict[str, list[str]]) -> dict[tuple[str, int], set[str] | None]:
    """(host, tcp port) -> the lab hosts it admits, or None when open to anywhere, from the
    common role's default port entries (the lab sets only the admin network)."""
    ssh = COMMON["common_ssh_port"]
    admitted: dict[tuple[str, int], set[str] | None] = {}
    for host in groups["all"]:
        entries = list(COMMON["common_firewall_all_hosts_ports"])
        for group, group_entries in COMMON["common_firewall_group_ports"].items():
            if host in groups.get(group, []):
                entries += group_entries
        # SSH: the admin network (no lab host) plus the groups' own SSH entries
        admitted[(host, ssh)] = set()
        for entry in entries:
            if entry.get("proto", "tcp") != "tcp":
                continue
            port = ssh if "common_ssh_port" in str(entry["port"]) else int(entry["port"])
            named = entry.get("source_groups") or []
            if not named and not entry.get("admin") and not entry.get("sources"):
                admitted[(host, port)] = None
                continue
            sources = {h for g in named for h in groups.get(g, [])}
            if admitted.get((host, port), set()) is not None:
                admitted[(host, port)] = admitted.get((host, port), set()) | sources
    return admitted


def probe(stack: Stack, source: str, targets: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """Connect from lab host SOURCE to each (address, port) in parallel: open, refused (the
    packet got through, nothing listens) or dropped (no answer within PROBE_TIMEOUT_S)."""
    lines = " ".join(f"{a}:{p}" for a, p in targets)
    script = (
        f"for t in {lines}; do a=${{t%:*}}; p=${{t#*:}};"
        f' (timeout {PROBE_TIMEOUT_S} bash -c "</dev/tcp/$a/$p" 2>/dev/null; echo "$t $?") &'
        " done; wait"
    )
    proc = stack.on(source, "bash", "-c", script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = {0: "open", 124: "dropped"}
    result = {}
    for target, rc in (line.split() for line in proc.stdout.splitlines() if line.strip()):
        address, port = target.rsplit(":", 1)
        result[(address, int(port))] = states.get(int(rc), "refused")
    return result


def test_every_service_port_admits_only_its_groups(stack: Stack) -> None:
    """From a lab host outside a port's source groups the port is dropped; from one inside it
    gets through. Every host, every restricted TCP port of the common role's defaults."""
    groups = _groups(stack.inventory)
    address = {h: inventory_address(stack.inventory, h) for h in groups["all"]}
    expected = expected_firewall(groups)
    denied: dict[str, list[tuple[str, int]]] = defaultdict(list)
    allowed: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (host, port), sources in sorted(expected.items()):
        if sources is None:
            continue
        outsiders = [h for h in groups["all"] if h not in sources and h != host]
        insiders = [h for h in sorted(sources) if h != host]
        if outsiders:  # one lab host outside the groups (alphabetically first) is enough
            denied[outsiders[0]].append((address[host], port))
        if insiders:
            allowed[insiders[0]].append((address[host], port))
    wrong = []
    for source, targets in denied.items():
        for target, state in probe(stack, source, targets).items():
            if state != "dropped":
                wrong.append(f"{source} -> {target}: {state} (should be dropped)")
    for source, targets in allowed.items():
        for target, state in probe(stack, source, targets).items():
            if state == "dropped":
                wrong.append(f"{source} -> {target}: dropped (its group may connect)")
    n_denied = sum(len(t) for t in denied.values())
    n_allowed = sum(len(t) for t in allowed.values())
    print(
        f"firewall: {n_denied} connections from outside a port's groups tried (all must drop), "
        f"{n_allowed} from inside (all must pass), {len(groups['all'])} hosts"
    )
    assert n_denied >= 20 and n_allowed >= 10
    assert wrong == []


def test_an_app_host_cannot_write_to_etcd_or_stop_prometheus(stack: Stack) -> None:
    """The two control planes an app host must not touch: Patroni's leader key in etcd and
    Prometheus. From the admin network Prometheus refuses /-/quit and /-/reload (no
    --web.enable-lifecycle) and keeps answering."""
    data1 = inventory_address(stack.inventory, "data1")
    put = (
        f"curl -sSk --max-time {PROBE_TIMEOUT_S} -X POST https://{data1}:2379/v3/kv/put"
        ' -d \'{"key": "L3NlcnZpY2UvaW5rZGVwbG95L2xlYWRlcg==", "value": "YXBwMQ=="}\''
    )  # key /service/inkdeploy/leader, value app1, over the https etcd speaks
    quit_ = f"curl -sS --max-time {PROBE_TIMEOUT_S} -X POST http://{data1}:9090/-/quit"
    tried = 0
    for command in (put, quit_):
        proc = stack.on("app1", "bash", "-c", command)
        tried += 1
        assert proc.returncode != 0, proc.stdout
        assert "timed out" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    for path in ("/-/quit", "/-/reload"):
        request = urllib.request.Request(f"http://{data1}:9090{path}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - lab address
        tried += 1
        assert refused.value.code == 403
    with urllib.request.urlopen(f"http://{data1}:9090/-/ready", timeout=10) as response:
        assert response.status == 200
    leader = stack.on(
        "data1", "curl", "-sSf", "--cacert", f"{PG_TLS_DIR}/ca.crt", f"https://{data1}:8008/leader"
    )
    assert leader.returncode == 0, leader.stderr  # the cluster still has its leader
    print(f"control planes: {tried} bad requests tried, all refused; Prometheus still ready")


# On an app host, with the app's own DSN and password (/etc/inkapp/env) and its virtualenv: the
# DSN as deployed (verify-full against the PostgreSQL CA), then the same with TLS turned off or
# with a CA that did not sign the server. Prints one line per attempt, never the password.
APP_DB_PROBE = r"""
python=$(ls -d /srv/inkapp/slots/*/venv/bin/python | head -1)
exec "$python" - <<'PY'
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# systemd's EnvironmentFile syntax: NAME=value, the value unquoted up to the end of the line
with open("/etc/inkapp/env") as fh:
    env = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
dsn = conninfo_to_dict(env["INKDEPLOY_DATABASE_DSN"])
password = env["INKDEPLOY_DATABASE_PASSWORD"]
attempts = {
    "deployed": dsn,
    "plaintext": {**dsn, "sslmode": "disable"},
    "other-ca": {**dsn, "sslrootcert": "/etc/ssl/certs/ca-certificates.crt"},
}
for name, options in attempts.items():
    try:
        with psycopg.connect(make_conninfo(**options), password=password) as conn:
            row = conn.execute(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
            ).fetchone()
        print(name, "connected", row[0] if row else "without-tls", options["sslmode"])
    except psycopg.OperationalError as exc:
        print(name, "refused", " ".join(str(exc).split()).replace(password, "***"))
PY
"""


def test_postgresql_takes_only_verified_tls_from_an_app_host(stack: Stack) -> None:
    """From app1, an allowed client: the app's DSN connects over TLS verifying the server;
    the right password without TLS is refused by pg_hba.conf (hostssl), and a server the DSN's
    CA did not sign is refused by the client."""
    proc = stack.on("app1", "bash", "-c", APP_DB_PROBE)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(" ", 1)[0]: line for line in proc.stdout.splitlines()}
    _, outcome, version, sslmode = lines["deployed"].split()
    assert (outcome, sslmode) == ("connected", "verify-full"), lines
    assert version in ("TLSv1.2", "TLSv1.3"), lines
    assert "refused" in lines["plaintext"] and "no encryption" in lines["plaintext"], lines
    assert "refused" in lines["other-ca"] and "certificate verify failed" in lines["other-ca"]
    print(f"postgresql: 1 verified TLS connection, {len(lines) - 1} bad connections refused")


# Run on an app host with its own python3: a RESP PING to the Redis server and the sentinel on
# DATA, over TLS verified against the CA the app uses, in plain text, and over TLS trusting only
# the system's CAs. No password is sent: an answer (NOAUTH) is enough to show the channel works.
APP_REDIS_PROBE = """python3 - <<'PY'
import socket, ssl
HOST, CA = "{data}", "/etc/ssl/inkdeploy/redis-ca.crt"
def ask(port, context):
    try:
        sock = socket.create_connection((HOST, port), timeout=3)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=HOST)
        sock.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
        reply = sock.recv(200).decode(errors="replace").split()
        return "answered " + (reply[0] if reply else "nothing")
    except OSError as exc:
        return "refused " + " ".join(str(exc).split())
for port in (6379, 26379):
    print(f"verified:{{port}}", ask(port, ssl.create_default_context(cafile=CA)))
    print(f"plaintext:{{port}}", ask(port, None))
    print(f"other-ca:{{port}}", ask(port, ssl.create_default_context()))
PY
"""


def test_redis_and_sentinel_take_only_verified_tls_from_an_app_host(stack: Stack) -> None:
    """redis_tls is on in the lab: from app1, an allowed client, the Redis server and the
    sentinel answer over TLS verified against the Redis CA the app trusts; in plain text they
    never answer, and a client that trusts only the system CAs fails the handshake."""
    data = inventory_address(stack.inventory, "data1")
    proc = stack.on("app1", "bash", "-c", APP_REDIS_PROBE.format(data=data))
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    for port in (6379, 26379):
        assert lines[f"verified:{port}"] == "answered -NOAUTH", lines
        plain = lines[f"plaintext:{port}"]
        assert plain == "answered nothing" or plain.startswith("refused"), lines
        assert "certificate verify failed" in lines[f"other-ca:{port}"], lines
    print(f"redis: 2 verified TLS connections, {len(lines) - 2} bad connections refused")


def test_sshd_refuses_passwords_on_every_host(stack: Stack) -> None:
    groups = _groups(stack.inventory)
    tried = 0
    for host in groups["all"]:
        proc = subprocess.run(
            [
                "ssh", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
                "-o", "PreferredAuthentications=password,keyboard-interactive",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={PROBE_TIMEOUT_S * 3}",
                f"root@{inventory_address(stack.inventory, host)}", "true",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        tried += 1
        assert proc.returncode == 255, (host, proc.stderr)
        assert "Permission denied (publickey)" in proc.stderr, (host, proc.stderr)
    print(f"sshd: {tried} password logins tried, {tried} refused (publickey only)")


def _secrets(stack: Stack) -> dict[str, str]:
    """Every secret of the lab inventory (inventories/lab/secrets.yml names them), by name."""
    secrets = stack.secrets()
    assert len(secrets) >= 5
    return secrets


def test_no_secret_in_the_controllers_journals_events_or_runner_files(stack: Stack) -> None:
    """After the rollouts and rollbacks of test_stack_rollout.py: no secret of the inventory in
    the rollout journals and history next to the inventory, in the --json event stream and error
    output of every inkdeploy command the stack tests ran, in what the rollout webhook received,
    or in ansible-runner's private data directories (deleted after each run: any left over is
    searched too)."""
    secrets = _secrets(stack)
    state = stack.inventory.parent / ".inkdeploy"
    files = [p for p in state.rglob("*") if p.is_file()]
    journals = [p for p in files if p.suffix == ".jsonl"]
    assert journals and stack.transcripts, (
        "no rollout journal or command output to search: run this module after "
        "test_stack_rollout.py (the stack lane does)"
    )
    leftovers = [p for p in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*") if p.is_dir()]
    files += [p for d in leftovers for p in d.rglob("*") if p.is_file()]
    texts = {str(p): p.read_text(errors="replace") for p in files}
    texts |= {f"command {i}": text for i, text in enumerate(stack.transcripts)}
    webhooks = stack.webhook.bodies if stack.webhook else []
    kinds = sorted({json.loads(body).get("type", "?") for body in webhooks})
    assert {"rollout_started", "rollback_started", "rollout_finished"} <= set(kinds), (
        f"the rollout webhook received {kinds or 'nothing'}: the stack's policy must send the "
        "rollouts' events to it (conftest.write_rollout_webhook)"
    )
    texts |= {f"webhook {i}": body for i, body in enumerate(webhooks)}
    leaks = {
        where: sorted(name for name, value in secrets.items() if value in text)
        for where, text in texts.items()
    }
    leaks = {where: names for where, names in leaks.items() if names}
    print(
        f"controller: {len(secrets)} secrets searched in {len(journals)} journals, "
        f"{len(files) - len(journals)} other state files ({len(leftovers)} runner directories "
        f"left over), the output of {len(stack.transcripts)} commands and "
        f"{len(webhooks)} webhook deliveries ({', '.join(kinds)})"
    )
    assert leaks == {}


def test_no_secret_in_any_host_log(stack: Stack) -> None:
    """After site.yml, the rollouts and the rollbacks: no secret of the inventory in any host's
    journal, in the load balancers' Nginx logs or in /var/log."""
    secrets = _secrets(stack)
    groups = _groups(stack.inventory)
    leaks = {}
    scanned = 0
    for host in groups["all"]:
        # the logs come to the controller: a secret on the host's command line could be logged
        logs = stack.on(
            host, "bash", "-c",
            "journalctl -q -o cat --no-pager; grep -rsh '' /var/log --exclude-dir=journal",
        )  # fmt: skip
        assert logs.returncode in (0, 1) and len(logs.stdout) > 10_000, logs.stderr
        scanned += len(logs.stdout)
        found = sorted(name for name, value in secrets.items() if value in logs.stdout)
        if found:
            leaks[host] = found
    print(
        f"logs: {len(secrets)} secrets searched in {scanned / 1e6:.1f} MB of journal and "
        f"/var/log text from {len(groups['all'])} hosts"
    )
    assert leaks == {}
