"""The app role on a real host: two slots, two releases, the live one untouched by the deploy."""

import json
import shlex

import pytest

testinfra_hosts = ["app1"]

HOME = "/srv/inkapp"
CLIENT = r"""
import http.cookiejar, json, re, sys, urllib.parse, urllib.request
port = sys.argv[1]
base = f"http://localhost:{port}/"  # a name in ALLOWED_HOSTS
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
page = opener.open(base).read().decode()
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "note": "molecule"}).encode()
req = urllib.request.Request(base, data=data, headers={"Referer": base})
first = opener.open(req)  # the POST, then the page its redirect leads to
first_body = first.read().decode()
second_body = opener.open(base).read().decode()
print(json.dumps({
    "version": first.headers["X-App-Version"],
    "visits": int(re.search(r'id="visits">(\d+)<', first_body).group(1)),
    "first_source": "PostgreSQL" if "counted in PostgreSQL" in first_body else "cache",
    "second_source": "cache" if "read from the Redis cache" in second_body else "PostgreSQL",
    "noted": "molecule" in first_body,
}))
"""


def health(host, port):
    out = host.check_output(f"curl -fsS -H 'Host: localhost' http://127.0.0.1:{port}/healthz")
    return json.loads(out)


@pytest.mark.parametrize(
    ("slot", "port", "version"), [("blue", 8001, "1.0.0"), ("green", 8002, "1.1.0")]
)
def test_each_slot_runs_its_release_and_is_healthy(host, slot, port, version):
    unit = host.service(f"inkapp@{slot}")
    assert unit.is_running and unit.is_enabled
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert host.file(f"{HOME}/slots/{slot}").linked_to == f"{HOME}/releases/{version}"
    body = health(host, port)
    assert body["status"] == "ok" and body["version"] == version
    assert body["checks"] == {"db": "ok", "cache": "ok"}


def test_deploying_green_left_blue_running_untouched(host):
    before = host.file("/root/blue-pid-before-green").content_string.strip()
    now = host.check_output("systemctl show --property=MainPID --value inkapp@blue.service")
    assert before == now and now != "0"


def test_the_page_writes_to_postgresql_and_reads_through_redis(host):
    result = json.loads(host.check_output(f"printf %s {shlex.quote(CLIENT)} | python3 - 8002"))
    assert result["version"] == "1.1.0"
    assert result["visits"] >= 1 and result["noted"]
    assert result["first_source"] == "PostgreSQL"  # the write invalidated the cached count
    assert result["second_source"] == "cache"  # the next request reads the count from Redis


def test_units_are_notify_with_graceful_stop(host):
    props = host.check_output(
        "systemctl show --property=Type,TimeoutStopUSec,KillSignal,User inkapp@blue.service"
    )
    assert "Type=notify" in props and "TimeoutStopUSec=40s" in props
    assert "User=inkapp" in props and "KillSignal=15" in props


def test_gunicorn_trusts_forwarded_headers_only_from_load_balancers(host):
    conf = host.file(f"{HOME}/gunicorn.conf.py").content_string
    assert 'forwarded_allow_ips = "127.0.0.1"' in conf  # no lb in this scenario


def test_environment_file_is_private(host):
    env = host.file("/etc/inkapp/env")
    assert env.mode == 0o600 and env.user == "root" and env.group == "root"
    content = env.content_string
    assert "DJANGO_SETTINGS_MODULE=inkdeploy_release.settings" in content
    # The data tier's settings, from roles postgresql and redis_sentinel (data1 here).
    assert "target_session_attrs=read-write" in content
    assert "INKDEPLOY_REDIS_SENTINELS=" in content and ":26379" in content
    assert "INKDEPLOY_DATABASE_PASSWORD=" in content


def test_access_log_is_json_with_version_and_slot(host):
    lines = host.file("/var/log/inkapp/access-green.json").content_string.splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert records
    assert {r["version"] for r in records} == {"1.1.0"}
    assert {r["slot"] for r in records} == {"green"}
    assert all(isinstance(r["status"], int) and r["duration_ms"] >= 0 for r in records)


def test_release_log_records_both_deploys(host):
    lines = host.file("/var/log/inkapp/releases.log").content_string.splitlines()
    assert len(lines) == 2
    assert "slot=blue version=1.0.0 previous=none" in lines[0]
    assert "slot=green version=1.1.0 previous=none" in lines[1]


def test_migrations_ran_once(host):
    out = host.check_output(
        f"cd /tmp && set -a && . /etc/inkapp/env && {HOME}/slots/green/venv/bin/django-admin "
        "showmigrations inkapp"
    )
    assert "[X] 0001_initial" in out


def test_both_releases_are_installed_completely(host):
    for version in ("1.0.0", "1.1.0"):
        marker = json.loads(host.file(f"{HOME}/releases/{version}/.installed").content_string)
        assert marker["version"] == version
        assert host.file(f"{HOME}/releases/{version}/static/inkapp/style.css").is_file
