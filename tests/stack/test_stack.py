"""site.yml end to end on the lab, then what a user and an operator would check."""

from __future__ import annotations

import datetime
import http.client
import http.cookiejar
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from inkdeploy.deploy import Session
from inkdeploy.fastpath import RemoteError
from inkdeploy.lab.drill import drain_drill, inventory_address, kill_drill, wait_slot_healthy
from inkdeploy.loadgen import LoadConfig, LoadGenerator

from .conftest import LAB, VERSION, Stack, inkdeploy

pytestmark = pytest.mark.stack

# Mozilla "intermediate" (v5.7) cipher suites, as OpenSSL names them.
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}  # fmt: skip
INTERMEDIATE_TLS13 = {
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
}  # fmt: skip


def tls_context(stack: Stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.cacert))


def get(
    stack: Stack, path: str, address: str | None = None
) -> tuple[http.client.HTTPResponse, str, str]:
    """GET over HTTPS (to lb1, or to ADDRESS under lb1's name); the response, its body and the
    TLS version negotiated."""
    conn = http.client.HTTPSConnection(stack.lb, 443, context=tls_context(stack), timeout=10)
    if address:
        conn.sock = tls_context(stack).wrap_socket(
            socket.create_connection((address, 443), timeout=10), server_hostname=stack.lb
        )
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read().decode()
    version = conn.sock.version()
    conn.close()
    return response, body, version


def test_site_yml_converges_the_whole_stack(stack: Stack) -> None:
    run = stack.first_run
    assert run.rc == 0, run.tail()
    assert set(run.recap) == {"lb1", "lb2", "app1", "app2", "worker1", "data1", "backup1"}
    assert not run.failed_hosts


def test_https_answers_200_over_tls13_with_the_version(stack: Stack) -> None:
    response, body, tls = get(stack, "/")
    assert response.status == 200 and tls == "TLSv1.3"
    assert response.getheader("X-App-Version") == VERSION
    assert f'<span id="version">{VERSION}</span>' in body
    assert "max-age=" in (response.getheader("Strict-Transport-Security") or "")


def test_both_load_balancers_serve_the_site_under_one_name(stack: Stack) -> None:
    """DNS round robin: the site's name stands for lb1 and lb2; either answers with the same
    certificate (verified for that name) and the same release."""
    for address in stack.lbs:
        response, _, tls = get(stack, "/", address=address)
        assert response.status == 200 and tls == "TLSv1.3", address
        assert response.getheader("X-App-Version") == VERSION, address


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    conn = http.client.HTTPConnection(stack.lb, 80, timeout=10)
    conn.request("GET", "/some/page?x=1")
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://{stack.lb}/some/page?x=1"


def test_the_page_writes_to_postgresql_and_celery_answers(stack: Stack) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=tls_context(stack)),
        urllib.request.HTTPCookieProcessor(jar),
    )
    page = opener.open(stack.url, timeout=10).read().decode()
    before = int(re.search(r'id="visits">(\d+)<', page).group(1))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    note = f"e2e-{time.time_ns()}"
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "note": note}).encode()
    request = urllib.request.Request(stack.url, data=form, headers={"Referer": stack.url})  # noqa: S310
    after_post = opener.open(request, timeout=10).read().decode()  # POST, then its redirect
    assert note in after_post, "the visit written to PostgreSQL is not listed"
    assert int(re.search(r'id="visits">(\d+)<', after_post).group(1)) == before + 1
    # the write invalidated the cached count; the next request reads it from Redis
    assert "counted in PostgreSQL" in after_post
    assert "read from the Redis cache" in opener.open(stack.url, timeout=10).read().decode()
    # The task the POST queued runs on worker1 and its result comes back through Redis.
    deadline, state, result = time.monotonic() + 30, None, None
    while time.monotonic() < deadline:
        page = opener.open(stack.url, timeout=10).read().decode()
        state = re.search(r'id="task-state">(\w+)<', page)
        result = re.search(r'id="task-result">(\d+)<', page)
        if result:
            break
        time.sleep(1)
    assert result, f"no Celery result on the page (task state {state and state.group(1)})"
    visit_id = int(re.search(r"<li>#(\d+) at [^<]* " + re.escape(note), page).group(1))
    assert int(result.group(1)) == visit_id * visit_id
    assert "from worker1" in page
    # Beat (exactly one, on worker1) schedules a heartbeat every 10 s.
    assert re.search(r'id="beat">\d{4}-\d\d-\d\dT', page), "Celery beat has not run"


def test_app_hosts_run_the_release_as_the_app_role_wrote_it(stack: Stack) -> None:
    """What the app role leaves on each app host after site.yml: the live slot's unit, the
    private environment file with the data tier's settings, Gunicorn trusting forwarded headers
    from the load balancers only, JSON access logs, the release log, the migrations, and the
    release unpacked completely."""
    home, lbs = "/srv/inkapp", ",".join(stack.lbs)
    for host in ("app1", "app2"):
        props = stack.on(host, "systemctl", "show", "--property=Type,TimeoutStopUSec,KillSignal,"
                         "User,ActiveState", "inkapp@blue.service").stdout  # fmt: skip
        for expected in ("Type=notify", "TimeoutStopUSec=40s", "KillSignal=15", "User=inkapp",
                         "ActiveState=active"):  # fmt: skip
            assert expected in props.splitlines(), (host, props)
        env = stack.on(host, "stat", "-c", "%U %G %a", "/etc/inkapp/env").stdout.split()
        assert env == ["root", "root", "600"], (host, env)
        content = stack.on(host, "cat", "/etc/inkapp/env").stdout
        assert "DJANGO_SETTINGS_MODULE=inkdeploy_release.settings" in content
        assert "target_session_attrs=read-write" in content
        assert re.search(r"^INKDEPLOY_REDIS_SENTINELS=\S+:26379", content, re.M), host
        assert re.search(r"^INKDEPLOY_DATABASE_PASSWORD=\S", content, re.M), host
        conf = stack.on(host, "cat", f"{home}/gunicorn.conf.py").stdout
        assert f"forwarded_allow_ips = {json.dumps(lbs)}" in conf, (host, conf)
        log = stack.on(host, "cat", "/var/log/inkapp/access-blue.json").stdout
        records = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert records, f"{host} logged no request"
        assert {(r["version"], r["slot"]) for r in records} == {(VERSION, "blue")}
        assert all(isinstance(r["status"], int) and r["duration_ms"] >= 0 for r in records)
        releases = stack.on(host, "cat", "/var/log/inkapp/releases.log").stdout.splitlines()
        assert len(releases) == 1 and f"slot=blue version={VERSION} previous=none" in releases[0]
        marker = json.loads(stack.on(host, "cat", f"{home}/releases/{VERSION}/.installed").stdout)
        assert marker["version"] == VERSION
        static = stack.on(host, "test", "-f", f"{home}/releases/{VERSION}/static/inkapp/style.css")
        assert static.returncode == 0, host
    admin = f"{home}/slots/blue/venv/bin/django-admin"
    migrations = stack.on("app1", "sh", "-c", "cd /tmp && set -a && . /etc/inkapp/env && "
                          f"{admin} showmigrations inkapp")  # fmt: skip
    assert "[X] 0001_initial" in migrations.stdout, migrations.stdout + migrations.stderr


def test_tls_scan_shows_only_tls12_tls13_and_intermediate_ciphers(stack: Stack) -> None:
    scan = subprocess.run(
        ["sslscan", "--no-colour", f"{stack.lb}:443"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    protocols = dict(re.findall(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)$", scan, re.M))
    assert protocols == {
        "SSLv2": "disabled", "SSLv3": "disabled", "TLSv1.0": "disabled", "TLSv1.1": "disabled",
        "TLSv1.2": "enabled", "TLSv1.3": "enabled",
    }, scan  # fmt: skip
    ciphers = re.findall(r"^(?:Preferred|Accepted)\s+(TLSv1\.[23])\s+\d+ bits\s+(\S+)", scan, re.M)
    assert ciphers, scan
    for protocol, cipher in ciphers:
        allowed = INTERMEDIATE_TLS13 if protocol == "TLSv1.3" else INTERMEDIATE_TLS12
        assert cipher in allowed, f"{protocol} {cipher} is not in Mozilla intermediate"
    assert not any(cipher.startswith("DHE-") for _, cipher in ciphers)


def test_fast_path_weights_serve_at_once_and_leave_what_the_role_would_write(
    stack: Stack,
) -> None:
    """The orchestrator's SSH fast path on both load balancers: a change is served when it
    returns, a refusal changes nothing, and the role's playbook then finds nothing to change
    (the next test's site.yml run checks that too, for the whole stack)."""
    session = Session.open(stack.inventory)
    assert session.fast is not None
    live = {"app1:blue": 90, "app2:blue": 100}
    started = time.monotonic()
    done = session.fast.set_weights(live)
    seconds = time.monotonic() - started
    assert done is not None and all(r["changed"] for r in done.values()), done
    print(f"\nfast path weight step on {len(done)} load balancers: {seconds:.2f} s")
    assert seconds < 5
    for lb in done:
        url = "http://127.0.0.1:8080/inkdeploy/upstreams"
        read = f"import urllib.request as u; print(u.urlopen('{url}').read().decode())"
        served = stack.on(lb, "python3", "-c", read).stdout
        assert served.strip() == done[lb]["id"]
    before = nginx_files(stack)
    with pytest.raises(RemoteError, match="every slot of inkapp would be drained") as refused:
        session.fast.set_weights({"app1:blue": 0, "app2:blue": 0})
    assert refused.value.refused
    assert nginx_files(stack) == before
    same = stack.playbook("lb-weights.yml", nginx_lb_slot_weights=live)
    assert same.rc == 0 and same.changed == dict.fromkeys(same.recap, 0), same.tail(60)
    back = session.fast.set_weights({"app1:blue": 100, "app2:blue": 100})
    assert back is not None and all(r["changed"] for r in back.values())


def nginx_files(stack: Stack) -> str:
    """Checksums of every file under /etc/nginx on the LB."""
    listing = stack.on("lb1", "sh", "-c", "find /etc/nginx -type f | sort | xargs sha256sum")
    assert listing.returncode == 0, listing.stderr
    return listing.stdout


def test_a_broken_template_fails_the_play_and_the_lb_keeps_serving(stack: Stack) -> None:
    before = nginx_files(stack)
    gen = LoadGenerator(LoadConfig(stack.url, cacert=str(stack.cacert), rate=50)).start()
    # A value nginx -t rejects: the rendered file must never replace the running config.
    run = stack.playbook("loadbalancer.yml", nginx_lb_client_max_body_size="10 megabytes")
    report = gen.stop()
    assert run.rc != 0, "the play accepted a config nginx -t rejects"
    assert "nginx" in run.output and "failed=1" in run.output
    assert report.failed == 0 and report.ok > 0, report.format()
    assert nginx_files(stack) == before, "a file under /etc/nginx changed"
    assert stack.on("lb1", "nginx", "-t").returncode == 0
    response, _, _ = get(stack, "/")
    assert response.status == 200


def upstreams_by_second(stack: Stack) -> dict[int, set[str]]:
    """From the LB's JSON access log: epoch second -> upstream addresses that served in it."""
    raw = stack.on("lb1", "tail", "-n", "20000", "/var/log/nginx/inkdeploy-access.log").stdout
    seen: dict[int, set[str]] = {}
    for line in raw.splitlines():
        entry = json.loads(line)
        second = int(datetime.datetime.fromisoformat(entry["time"]).timestamp())
        seen.setdefault(second, set()).update(a.strip() for a in entry["upstream_addr"].split(","))
    return seen


def test_draining_an_app_host_and_bringing_it_back_fails_no_request(stack: Stack) -> None:
    """`inkdeploy drain app1` / `undrain app1` under 100 requests/s."""
    result = drain_drill(stack.inventory, stack.url, stack.cacert, "app1", rate=100)
    report = result.report
    drained, back = result.answers["drain"], result.answers["undrain"]
    print(f"\ndrain app1: {result.steps['drain']:.1f} s (no connection left after "
          f"{drained['idle_after_s']} s), undrain: {result.steps['return']:.1f} s; "
          f"{report.requests} requests, {report.failed} failed")  # fmt: skip
    assert drained["changed"] and drained["idle_after_s"] is not None, drained
    assert "safe to work on it" in drained["message"]
    assert back["changed"] and back["weights"] == {"app1:blue": 100, "app1:green": 0}, back
    assert report.requests >= 1000
    assert report.failed == 0, report.format()
    app1 = f"{inventory_address(stack.inventory, 'app1')}:8001"
    app2 = f"{inventory_address(stack.inventory, 'app2')}:8001"
    seen = upstreams_by_second(stack)
    drained = range(int(result.marks["drained"]) + 1, int(result.marks["returning"]))
    assert drained, result.marks
    assert all(app1 not in seen.get(second, set()) for second in drained), "drained app1 served"
    assert any(app2 in seen.get(second, set()) for second in drained)
    after = [s for s in seen if s > result.marks["returned"] + 1]
    assert any(app1 in seen[s] for s in after), "app1 got no traffic back after the drain"


def status_and_drain(stack: Stack, host: str) -> dict:
    """What on-call does when an app host is down: look, then take it out."""
    began = time.monotonic()
    status = inkdeploy("status", "-i", str(stack.inventory), "--json", timeout=60)
    status_s = time.monotonic() - began
    drained = inkdeploy("drain", host, "-i", str(stack.inventory), "--json", "--wait", "10")
    return {"status": status, "status_s": status_s, "drain": drained}


def test_a_hard_killed_app_host_costs_at_most_a_handful_of_requests(stack: Stack) -> None:
    """Also the on-call path with the host down: status answers, marking it unreachable;
    drain takes it out; once it is back, undrain gives it traffic again."""
    result = kill_drill(stack.inventory, stack.url, stack.cacert, "app2", LAB, rate=100,
                        while_down=lambda: status_and_drain(stack, "app2"))  # fmt: skip
    down = result.answers["while_down"]
    assert down["status"].returncode == 0, down["status"].stderr
    fleet = json.loads(down["status"].stdout)["fleet"]
    print(f"\nstatus with app2 down: {down['status_s']:.1f} s")
    assert fleet["unreachable"] == ["app2"] and fleet["hosts"]["app1"]["live_slot"], fleet
    assert down["status_s"] < 10
    assert down["drain"].returncode == 0, down["drain"].stderr
    assert json.loads(down["drain"].stdout)["changed"]
    report = result.report
    assert report.requests >= 2500
    assert report.failed <= 10, report.format()
    # The requests after the first seconds all succeed: passive health took app2 out.
    assert not [s for s in report.failed_seconds() if s > 20], report.format(timeline=True)
    # app2 rebooted: its slot starts at boot and serves again.
    try:
        wait_slot_healthy(LAB, "app2", VERSION, timeout=90)
    except TimeoutError as exc:
        pytest.fail(f"app2's blue slot did not come back after the reboot: {exc}")
    back = inkdeploy("undrain", "app2", "-i", str(stack.inventory), "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["weights"] == {"app2:blue": 100, "app2:green": 0}


def on_call_status(stack: Stack, part: str) -> dict:
    run = inkdeploy(part, "status", "-i", str(stack.inventory), "--json", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def test_status_shows_the_whole_stack_in_seconds(stack: Stack) -> None:
    """`inkdeploy status`: app tier (fast path) with the Celery queues, data tier with etcd,
    and alerts, probed at once."""
    run = inkdeploy("status", "-i", str(stack.inventory), "--json", timeout=60)
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    print(f"\nstatus of the whole stack: {status['seconds']:.2f} s inside the command")
    assert status["fleet"]["current_version"] == VERSION
    assert status["fleet"]["unreachable"] == [] and status["fleet"]["drained"] == []
    assert status["db"]["leader"] == "data1" and status["db"]["ok"], status["db"]
    assert status["redis"]["master_host"] == "data1", status["redis"]
    assert status["alerts_unknown"] == "", status["alerts_unknown"]
    assert isinstance(status["alerts"], list)
    etcd = status["etcd"]
    assert (etcd["leader"], etcd["healthy"], etcd["problems"]) == ("data1", ["data1"], []), etcd
    # the Celery workers per queue, each with the release its running process was started from
    fleet = status["fleet"]
    assert fleet["queues"] == {
        "celery": [{"host": "worker1", "queue": "celery", "state": "active", "release": VERSION}]
    }, fleet["queues"]
    assert fleet["beat"] == {"worker1": "active"} and fleet["workers_silent"] == []
    assert status["seconds"] < 6  # 3 s is the goal on an idle machine; CI runs two lanes


def test_db_and_redis_status_show_the_data_tier(stack: Stack) -> None:
    """The on-call view of the data tier, from Patroni's REST API and the sentinels."""
    db = on_call_status(stack, "db")
    assert (db["ok"], db["leader"], db["unreachable"]) == (True, "data1", {}), db
    assert [(m["name"], m["role"], m["state"]) for m in db["members"]] == [
        ("data1", "leader", "running")
    ]
    assert db["members"][0]["host"] == inventory_address(stack.inventory, "data1")
    assert db["seconds"] < 3
    redis = on_call_status(stack, "redis")
    address = inventory_address(stack.inventory, "data1")
    assert (redis["ok"], redis["master_host"]) == (True, "data1"), redis
    assert redis["sentinels"] == {"data1": f"{address}:6379"}
    assert redis["master_flags"] == ["master"] and redis["replicas"] == []
    assert redis["seconds"] < 3


def test_db_commands_take_the_deploy_lock_and_leave_their_mark_in_the_history(
    stack: Stack,
) -> None:
    """On a fleet with load balancers, `inkdeploy db` changes happen under the deploy lock and
    are recorded; a switchover with no replica to go to is refused with nothing changed. (The
    operations themselves are drilled on three members in the postgresql-ha scenario.)"""
    inv = str(stack.inventory)
    refused = inkdeploy("db", "switchover", "-i", inv, timeout=60)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "No healthy synchronous standby to switch over to" in said
    assert "Traceback" not in said
    results = {}
    for verb in ("pause", "resume"):
        run = inkdeploy("db", verb, "-i", inv, "-m", f"stack test {verb}", "--json", timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        results[verb] = json.loads(run.stdout)
        assert results[verb]["changed"] and results[verb]["lock"] == "held", results[verb]
        assert on_call_status(stack, "db")["paused"] is (verb == "pause")
    history = json.loads(inkdeploy("history", "-i", inv, "--json", timeout=60).stdout)
    marks = [(r["kind"], r["result"], r["reason"]) for r in history[-2:]]
    assert marks == [("db-pause", "succeeded", "stack test pause"),
                     ("db-resume", "succeeded", "stack test resume")]  # fmt: skip
    lock = json.loads(inkdeploy("lock", "status", "-i", inv, "--json", timeout=60).stdout)
    assert not lock.get("holder"), lock
    print(f"\ndb pause {results['pause']['seconds']:.1f} s, resume "
          f"{results['resume']['seconds']:.1f} s (under the deploy lock)")  # fmt: skip


def test_the_lb_answers_its_own_healthz(stack: Stack) -> None:
    response, body, _ = get(stack, "/healthz")
    assert response.status == 200 and json.loads(body)["service"] == "nginx_lb"
    assert response.getheader("X-App-Version") is None, "/healthz went to the app, not the LB"
