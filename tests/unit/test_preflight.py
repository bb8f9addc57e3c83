"""inkdeploy.preflight: the rules on canned observations, then the probes against real servers on
loopback (Patroni's and Prometheus's HTTP APIs, a RESP Sentinel, TCP listeners), including ports
that never answer, with the total time measured."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from inkdeploy import preflight
from inkdeploy.config import Policy
from inkdeploy.inventory import Environment
from inkdeploy.preflight import (
    Observation,
    Observations,
    evaluate,
    evaluate_alerts,
    evaluate_lbs,
    evaluate_patroni,
    evaluate_sentinels,
    run_preflight,
)
from tests.unit.loopback import LoopbackServer


def leader(name: str = "db1") -> dict[str, Any]:
    return {"name": name, "role": "leader", "state": "running", "host": "10.0.0.1", "timeline": 3}


def member(name: str, role: str = "replica", state: str = "streaming", lag: Any = 0) -> dict:
    return {"name": name, "role": role, "state": state, "host": "10.0.0.2", "lag": lag}


def cluster(host: str, *members: dict[str, Any]) -> Observation:
    return Observation(host, f"{host}:8008", 0.01, data={"members": list(members)})


def config(host: str, synchronous_mode: Any) -> Observation:
    return Observation(host, f"{host}:8008", 0.01, data={"synchronous_mode": synchronous_mode})


def down(host: str, error: str = "no answer within 2 s") -> Observation:
    return Observation(host, f"{host}:8008", 2.0, error=error)


# --- Patroni rules ----------------------------------------------------------------------------


def test_a_leader_and_a_streaming_sync_standby_pass() -> None:
    members = (leader(), member("db2", "sync_standby"), member("db3"))
    check = evaluate_patroni(
        [cluster("db1", *members), cluster("db2", *members), cluster("db3", *members)],
        [config("db1", True)],
        sync_mode_inventory=True,
    )
    assert check.ok, check.problems
    assert "synchronous_mode on (GET /config on db1)" in check.detail


def test_no_sync_standby_is_refused_with_what_each_member_is() -> None:
    members = (leader(), member("db2"))
    check = evaluate_patroni(
        [cluster("db1", *members), cluster("db2", *members)], [], sync_mode_inventory=True
    )
    assert check.problems == [
        "Patroni on db1 reports no sync standby (members: db1 leader running, db2 replica "
        "streaming lag 0 B); fix replication or pass --force."
    ]


@pytest.mark.parametrize(
    ("state", "ok"), [("running", True), ("streaming", True), ("stopped", False)]
)
def test_the_sync_standby_must_replicate(state: str, ok: bool) -> None:
    # Patroni 3.0.2 (Debian 12) says "running" for a healthy standby, 3.0.4 and later "streaming".
    check = evaluate_patroni(
        [cluster("db1", leader(), member("db2", "sync_standby", state, lag=2_500_000))],
        [config("db1", True)],
        sync_mode_inventory=False,
    )
    assert check.ok is ok
    if not ok:
        assert "db2 sync_standby stopped lag 2.4 MB" in check.problems[0]


def test_a_one_member_cluster_needs_no_standby() -> None:
    # The five-host `small` lab: data1 alone, synchronous mode on.
    check = evaluate_patroni([cluster("data1", leader("data1"))], [config("data1", True)], True)
    assert check.ok, check.problems


def test_the_cluster_setting_wins_over_the_inventory() -> None:
    observed = [cluster("db1", leader(), member("db2"))]
    assert evaluate_patroni(observed, [config("db1", False)], sync_mode_inventory=True).ok
    # /config unanswered: the inventory's patroni_synchronous_mode decides.
    refused = evaluate_patroni(observed, [down("db1")], sync_mode_inventory=True)
    assert not refused.ok
    assert "inventory patroni_synchronous_mode" in refused.detail


def test_no_leader_and_two_leaders_are_refused() -> None:
    none = evaluate_patroni([cluster("db1", member("db1"), member("db2"))], [], False)
    assert none.problems == [
        "Patroni on db1 reports no leader (members: db1 replica streaming lag 0 B, db2 replica "
        "streaming lag 0 B); PostgreSQL takes no writes: see 'patronictl list', or pass --force."
    ]
    two = evaluate_patroni([cluster("db1", leader("db1"), leader("db2"))], [], False)
    assert len(two.problems) == 1
    assert two.problems[0].startswith("Patroni on db1 reports 2 leaders (db1, db2;")


def test_a_leader_that_does_not_run_is_refused() -> None:
    stopped = {**leader(), "state": "stopped"}
    check = evaluate_patroni([cluster("db1", stopped)], [], False)
    assert check.problems[0].startswith("Patroni on db1 reports leader db1 in state 'stopped'")


def test_members_that_disagree_are_refused() -> None:
    check = evaluate_patroni(
        [
            cluster("db1", leader("db1"), member("db2")),
            cluster("db2", member("db1"), leader("db2")),
        ],
        [],
        sync_mode_inventory=False,
    )
    assert check.problems == [
        "The Patroni members disagree about the cluster (db1 sees leader db1 of db1, db2; "
        "db2 sees leader db2 of db1, db2): a failover in progress or a split; wait for "
        "'patronictl list' to settle, or pass --force."
    ]


def test_the_leaders_view_is_the_reference() -> None:
    members = (leader("db2"), member("db1", "sync_standby"))
    check = evaluate_patroni([cluster("db1", *members), cluster("db2", *members)], [], True)
    assert check.ok
    assert check.detail.startswith("db2 sees db2 leader running")


def test_a_member_that_does_not_answer_is_named() -> None:
    members = (leader(), member("db2", "sync_standby"))
    check = evaluate_patroni([cluster("db1", *members), down("db3")], [], True)
    assert check.problems == [
        "Patroni on db3 (db3:8008) did not answer GET /cluster: no answer within 2 s; check "
        "'systemctl status patroni' on db3, or pass --force."
    ]


def test_no_database_hosts_is_nothing_to_check() -> None:
    assert evaluate_patroni([], [], True).ok


# --- Sentinel rules ---------------------------------------------------------------------------


def sentinel(host: str, master: list[str] | None = None, error: str | None = None) -> Observation:
    return Observation(host, f"{host}:26379", 0.01, data=master, error=error)


MASTER = ["10.0.0.5", "6379"]


def test_sentinels_that_agree_pass_even_with_one_missing() -> None:
    check = evaluate_sentinels(
        [
            sentinel("r1", MASTER),
            sentinel("r2", MASTER),
            sentinel("r3", error="connection refused"),
        ],
        "inkdeploy",
    )
    assert check.ok
    assert "r1 says 10.0.0.5:6379" in check.detail
    assert "r3: connection refused" in check.detail


def test_sentinels_that_disagree_are_refused() -> None:
    check = evaluate_sentinels(
        [sentinel("r1", MASTER), sentinel("r2", ["10.0.0.6", "6379"]), sentinel("r3", MASTER)],
        "inkdeploy",
    )
    assert check.problems == [
        'The sentinels disagree on the Redis master of "inkdeploy" (r1 says 10.0.0.5:6379, '
        "r2 says 10.0.0.6:6379, r3 says 10.0.0.5:6379): a failover in progress or a split; "
        "wait for it to settle (SENTINEL masters on each), or pass --force."
    ]


def test_a_minority_of_sentinels_is_refused() -> None:
    check = evaluate_sentinels(
        [
            sentinel("r1", MASTER),
            sentinel("r2", error="no answer within 2 s"),
            sentinel("r3", None),  # a sentinel that does not know the name answers nil
        ],
        "inkdeploy",
    )
    assert check.problems == [
        '1 of 3 sentinels named a Redis master for "inkdeploy", 2 needed for a failover '
        '(r2: no answer within 2 s; r3: does not monitor a master named "inkdeploy"); '
        "bring the sentinels back, or pass --force."
    ]


# --- alerts and load balancers ------------------------------------------------------------------


def alert(name: str, severity: str, state: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": f"{name} summary."},
        "state": state,
        "activeAt": "2026-01-01T10:00:00Z",
    }


def test_only_firing_critical_alerts_count() -> None:
    alerts = [
        alert("Watchdog", "critical"),
        alert("PostgresDown", "critical", host="data1"),
        alert("PostgresReplicationLag", "warning", host="data1"),
        alert("AppSlotDown", "critical", state="pending", host="app1"),
    ]
    check = evaluate_alerts(Observation("mon1", "http://mon1:9090", 0.01, data=alerts))
    assert check.problems == [
        "Alert PostgresDown (critical) is firing on data1 since 2026-01-01T10:00:00Z "
        "(PostgresDown summary); fix it first, or pass --force."
    ]


def test_an_alert_about_a_release_no_slot_serves_is_left_aside() -> None:
    """Right after a bad canary was rolled back its error-ratio alert still fires (its 1 m rate
    remembers the errors): that is no reason to refuse the next rollout. The same alert about a
    version that serves is."""
    gone = alert("AppErrorRatioHigh", "critical", version="3.0.0")
    served = alert("AppErrorRatioHigh", "critical", version="2.0.0")
    fleet_wide = alert("LoadBalancer5xxRatioHigh", "critical")
    obs = Observation("mon1", "http://mon1:9090", 0.01, data=[gone, served, fleet_wide])
    check = evaluate_alerts(obs, frozenset({"2.0.0"}))
    assert [p.split(" is firing")[0] for p in check.problems] == [
        "Alert AppErrorRatioHigh (critical)",
        "Alert LoadBalancer5xxRatioHigh (critical)",
    ]
    assert "1 about 3.0.0, served by no slot, ignored" in check.detail
    only_gone = Observation("mon1", "http://mon1:9090", 0.01, data=[gone])
    assert evaluate_alerts(only_gone, frozenset({"2.0.0"})).ok
    # live versions unknown (no fleet read): every critical alert counts
    assert not evaluate_alerts(only_gone).ok


def test_no_monitoring_host_is_a_note_not_a_problem() -> None:
    check = evaluate_alerts(None)
    assert check.ok
    assert "alerts not checked" in check.detail


def test_an_unanswering_prometheus_is_a_problem() -> None:
    obs = Observation("mon1", "http://10.0.0.9:9090", 2.0, error="no answer within 2 s")
    [problem] = evaluate_alerts(obs).problems
    assert problem.startswith(
        "Prometheus at http://10.0.0.9:9090 did not answer GET /api/v1/alerts: no answer within 2 s"
    )


def test_a_load_balancer_that_refuses_is_named() -> None:
    check = evaluate_lbs(
        [
            Observation("lb1", "10.0.0.10:443", 0.01),
            Observation("lb2", "10.0.0.11:443", 0.01, error="connection refused"),
        ]
    )
    assert check.problems == [
        "Load balancer lb2 (10.0.0.11:443) did not accept a TCP connection: connection refused; "
        "check nginx on lb2 (systemctl status nginx), or pass --force."
    ]
    assert check.detail == "1 of 2 accept connections (lb1)"


def test_evaluate_collects_every_problem_and_one_check_per_area() -> None:
    result = evaluate(
        Observations(
            patroni=[cluster("db1", member("db1"))],
            sentinels=[sentinel("r1", error="connection refused")],
            lbs=[Observation("lb1", "x:443", 0.01)],
        )
    )
    assert [c["name"] for c in result.checks] == ["patroni", "sentinel", "alerts", "load balancers"]
    assert [c["ok"] for c in result.checks] == [False, False, True, True]
    assert len(result.problems) == 2
    assert not result.ok
    assert set(result.to_dict()) == {"ok", "problems", "checks"}


# --- the probes, against real servers on loopback -----------------------------------------------


class JsonServer(LoopbackServer):
    """GET (or POST) PATH answers ROUTES[PATH] as JSON (404 otherwise)."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path in owner.routes
                payload = json.dumps(owner.routes.get(self.path, {})).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:  # the same answers (etcd's gRPC gateway is POST)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)


def _read_command(rfile: BinaryIO) -> list[str] | None:
    header = rfile.readline()
    if not header.startswith(b"*"):
        return None
    args = []
    for _ in range(int(header[1:])):
        size = int(rfile.readline()[1:])
        args.append(rfile.read(size + 2)[:-2].decode())
    return args


class FakeSentinel:
    """A RESP2 server that answers AUTH and SENTINEL get-master-addr-by-name as Sentinel 7 does."""

    def __init__(self, master: list[str] | None, password: str | None = None) -> None:
        self.master, self.password, self.auths = master, password, []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                authed = owner.password is None
                while (args := _read_command(self.rfile)) is not None:
                    if args[0].upper() == "AUTH":
                        owner.auths.append(args[-1])
                        authed = args[-1] == owner.password
                        reply = b"+OK\r\n" if authed else b"-WRONGPASS invalid password\r\n"
                    elif not authed:
                        reply = b"-NOAUTH Authentication required.\r\n"
                    elif owner.master is None or args[2] != "inkdeploy":
                        reply = b"*-1\r\n"
                    else:
                        reply = b"*2\r\n" + b"".join(
                            b"$%d\r\n%s\r\n" % (len(x), x.encode()) for x in owner.master
                        )
                    self.wfile.write(reply)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> FakeSentinel:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mute_port() -> Iterator[int]:
    """Accepts TCP connections (the kernel does) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def dead_port() -> Iterator[int]:
    """Never completes a TCP handshake, like a host that is down: a listener whose accept queue
    is full (backlog 0, one connection waiting) drops every further SYN."""
    with socket.socket() as sock, socket.socket() as filler:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        filler.connect(sock.getsockname())
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lb_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 standing in for nginx's 443."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        monkeypatch.setattr(preflight, "LB_HTTPS_PORT", sock.getsockname()[1])
        yield sock.getsockname()[1]


def fleet(
    *,
    patroni: dict[str, int],
    sentinels: dict[str, int],
    lbs: dict[str, str],
    prometheus: int | None,
    common: dict[str, Any] | None = None,
) -> Environment:
    """An Environment as load_environment builds it: groups and hostvars, all on loopback."""
    hostvars: dict[str, dict[str, Any]] = {}
    for host, port in patroni.items():
        # the stand-in APIs speak plain http (test_patroni_tls.py covers the https default)
        hostvars.setdefault(host, {}).update(patroni_restapi_port=port, postgresql_tls=False)
    for host, port in sentinels.items():
        hostvars.setdefault(host, {})["redis_sentinel_port"] = port
    for host, address in lbs.items():
        hostvars.setdefault(host, {})["ansible_host"] = address
    for values in hostvars.values():
        values.setdefault("ansible_host", "127.0.0.1")
        values.update(common or {})
    groups = {"app": ["app1"], "db": list(patroni), "sentinel": list(sentinels), "lb": list(lbs)}
    url = f"http://127.0.0.1:{prometheus}" if prometheus else None
    policy = Policy.model_validate({"prometheus_url": url})
    return Environment(Path("/nonexistent/hosts.yml"), "test", groups, hostvars, policy)


PASSWORD = "s3cret-not-for-logs"  # noqa: S105 - a test value
VAULTED, LAB = "from-vault", "from-lab-secrets"


def test_a_healthy_fleet_passes_and_the_password_is_used_not_shown(lb_port: int) -> None:
    routes = {"/cluster": {"members": [leader("db1")]}, "/config": {"synchronous_mode": True}}
    with (
        JsonServer(routes) as patroni,
        FakeSentinel(["127.0.0.1", "6379"], password=PASSWORD) as sentinel,
        JsonServer({"/api/v1/alerts": {"status": "success", "data": {"alerts": []}}}) as prom,
    ):
        env = fleet(
            patroni={"db1": patroni.port},
            sentinels={"r1": sentinel.port},
            lbs={"lb1": "127.0.0.1"},
            prometheus=prom.port,
            common={"redis_sentinel_password": PASSWORD},
        )
        result = run_preflight(env)
    assert result.problems == []
    assert [c["ok"] for c in result.checks] == [True, True, True, True]
    assert sentinel.auths == [PASSWORD]
    text = json.dumps(result.to_dict())
    assert PASSWORD not in text
    assert "password from the inventory (redis_sentinel_password)" in text


def test_real_answers_that_are_bad_become_problems(lb_port: int) -> None:
    members = [leader("db1"), member("db2")]
    routes = {"/cluster": {"members": members}, "/config": {"synchronous_mode": True}}
    alerts = [alert("PostgresDown", "critical", host="db2"), alert("Watchdog", "none")]
    with (
        JsonServer(routes) as db1,
        JsonServer(routes) as db2,
        FakeSentinel(None) as sentinel,
        JsonServer({"/api/v1/alerts": {"status": "success", "data": {"alerts": alerts}}}) as prom,
    ):
        env = fleet(
            patroni={"db1": db1.port, "db2": db2.port},
            sentinels={"r1": sentinel.port},
            lbs={"lb1": "127.0.0.1", "lb2": "127.0.0.2"},  # nothing listens on 127.0.0.2
            prometheus=prom.port,
        )
        result = run_preflight(env)
    assert len(result.problems) == 4
    assert result.problems[0].startswith("Patroni on db1 reports no sync standby (members: db1")
    assert result.problems[1].startswith('0 of 1 sentinels named a Redis master for "inkdeploy"')
    assert result.problems[2].startswith("Alert PostgresDown (critical) is firing on db2")
    assert result.problems[3].startswith(
        f"Load balancer lb2 (127.0.0.2:{lb_port}) did not accept a TCP connection: "
        "connection refused"
    )


def test_a_wrong_sentinel_password_is_reported_without_the_password(lb_port: int) -> None:
    with FakeSentinel(["127.0.0.1", "6379"], password=PASSWORD) as sentinel:
        env = fleet(
            patroni={},
            sentinels={"r1": sentinel.port},
            lbs={},
            prometheus=None,
            common={"redis_sentinel_password": "wrong"},
        )
        result = run_preflight(env)
    [problem] = result.problems
    assert "r1: WRONGPASS invalid password" in problem
    assert PASSWORD not in json.dumps(result.to_dict())


def test_the_password_is_found_through_a_template_or_the_lab_secrets_file(
    lb_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INKDEPLOY_LAB_ROOT", str(tmp_path))
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "secrets.json").write_text(json.dumps({"redis_sentinel_password": LAB}))
    with FakeSentinel(["127.0.0.1", "6379"], password=VAULTED) as vaulted:
        env = fleet(
            patroni={},
            sentinels={"r1": vaulted.port},
            lbs={},
            prometheus=None,
            common={
                "redis_sentinel_password": "{{ vault_redis_sentinel_password }}",
                "vault_redis_sentinel_password": VAULTED,
            },
        )
        assert run_preflight(env).ok
    with FakeSentinel(["127.0.0.1", "6379"], password=LAB) as lab:
        env = fleet(
            patroni={},
            sentinels={"r1": lab.port},
            lbs={},
            prometheus=None,
            common={"inkdeploy_lab": "stack"},  # the secret itself is not in the hostvars
        )
        result = run_preflight(env)
    assert result.ok, result.problems
    assert f"password from the lab's {tmp_path}/stack/secrets.json" in result.checks[1]["detail"]


def test_ports_that_never_answer_cost_the_timeout_once(
    lb_port: int, mute_port: int, dead_port: int
) -> None:
    env = fleet(
        patroni={"db1": mute_port, "db2": dead_port, "db3": closed_port()},
        sentinels={"r1": mute_port, "r2": dead_port, "r3": closed_port()},
        lbs={"lb1": "127.0.0.1"},
        prometheus=mute_port,
    )
    began = time.monotonic()
    result = run_preflight(env, timeout_s=0.5)
    took = time.monotonic() - began
    # every probe at once: one timeout plus the grace (0.8 s), not ten in a row (5 s); the
    # margin is for a loaded machine, where starting ten threads alone can take 0.2 s
    assert 0.45 < took < 1.5, took
    problems = "\n".join(result.problems)
    assert "Patroni on db1 (127.0.0.1:" in problems
    assert "did not answer GET /cluster: no answer within 0.5 s" in problems
    assert "Patroni on db3" in problems and "connection refused" in problems
    assert "Prometheus at http://127.0.0.1:" in problems
    assert '0 of 3 sentinels named a Redis master for "inkdeploy", 2 needed' in problems
    assert [c["ok"] for c in result.checks] == [False, False, False, True]


def test_a_down_host_at_the_default_timeout_stays_under_three_seconds(
    lb_port: int, dead_port: int
) -> None:
    routes = {"/cluster": {"members": [leader("db1")]}, "/config": {"synchronous_mode": False}}
    with JsonServer(routes) as db1, FakeSentinel(["127.0.0.1", "6379"]) as r1:
        env = fleet(
            patroni={"db1": db1.port, "db2": dead_port},
            sentinels={"r1": r1.port, "r2": r1.port, "r3": dead_port},
            lbs={"lb1": "127.0.0.1"},
            prometheus=None,
        )
        began = time.monotonic()
        result = run_preflight(env)
        took = time.monotonic() - began
    assert took < 2.5, took
    assert result.problems == [
        f"Patroni on db2 (127.0.0.1:{dead_port}) did not answer GET /cluster: no answer within "
        "2 s; check 'systemctl status patroni' on db2, or pass --force."
    ]
    assert "r3: no answer within 2 s" in result.checks[1]["detail"]


@pytest.fixture
def trickle_port() -> Iterator[int]:
    """Answers one byte every 0.2 s and never finishes: no single read ever times out."""
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    def drip(conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = threading.Thread(target=serve, args=(sock,), daemon=True)
        server.start()
        yield sock.getsockname()[1]
        stop.set()
        server.join()  # before the socket closes under its accept()


def test_a_probe_that_keeps_dripping_is_given_up_at_the_deadline(
    lb_port: int, trickle_port: int
) -> None:
    env = fleet(patroni={}, sentinels={}, lbs={}, prometheus=trickle_port)
    began = time.monotonic()
    result = run_preflight(env, timeout_s=0.5)
    took = time.monotonic() - began
    assert took < 1.6, took  # the timeout plus the 0.3 s grace (and load), not the server's 20 s
    [problem] = result.problems
    assert "did not answer GET /api/v1/alerts: no answer within 0.5 s" in problem
