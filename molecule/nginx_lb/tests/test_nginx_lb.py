"""Verify the nginx_lb role on lb1 in front of app1's stand-in blue and green slots.

Run by `molecule test -s nginx_lb` (verify step), or by hand:
    py.test --ansible-inventory=INVENTORY --connection=ansible molecule/nginx_lb/tests
"""

import http.client
import json
import re
import socket
import ssl
import time

import pytest

from conftest import DEFAULT_WEIGHTS, SCENARIO, request_id

# Mozilla "intermediate" TLS 1.2 suites (without DHE) and the TLS 1.3 suites.
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


# --- TLS ----------------------------------------------------------------------------------------


def test_https_over_tls13_reaches_the_app(lab):
    ctx = lab.tls_context(minimum=ssl.TLSVersion.TLSv1_3)
    response, body, version, _ = lab.https("/hello", context=ctx)
    assert version == "TLSv1.3"
    assert response.status == 200
    assert response.getheader("X-App-Version") == "blue-1"
    assert json.loads(body)["path"] == "/hello"


def test_certificate_is_signed_by_the_internal_ca(lab):
    """The controller's ca.crt verifies the chain, and lb1 holds the same CA certificate."""
    assert lab.ca_file.is_file()
    assert lab.lb.file("/etc/ssl/inkdeploy-lb/ca.pem").content_string == lab.ca_file.read_text()
    with (
        socket.create_connection((lab.lb_address, 443), timeout=5) as raw,
        lab.tls_context().wrap_socket(raw, server_hostname=lab.lb_address) as tls,
    ):
        cert = tls.getpeercert()
    sans = [value for _kind, value in cert["subjectAltName"]]
    assert lab.lb_address in sans
    assert "lb1" in sans
    # Mozilla's intermediate profile: a certificate lives at most 366 days
    lifetime = ssl.cert_time_to_seconds(cert["notAfter"]) - ssl.cert_time_to_seconds(
        cert["notBefore"]
    )
    assert lifetime <= 366 * 86400, lifetime / 86400


def test_tls12_with_an_intermediate_cipher(lab):
    ctx = lab.tls_context(
        minimum=ssl.TLSVersion.TLSv1_2,
        maximum=ssl.TLSVersion.TLSv1_2,
        ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
    )
    response, _, version, cipher = lab.https("/", context=ctx)
    assert (version, response.status) == ("TLSv1.2", 200)
    assert cipher in INTERMEDIATE_TLS12


def test_tls12_cbc_and_non_ecdhe_ciphers_are_refused(lab):
    ctx = lab.tls_context(
        maximum=ssl.TLSVersion.TLSv1_2,
        ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256:@SECLEVEL=0",
    )
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER|handshake failure"):
        lab.https("/", context=ctx)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls10_and_tls11_are_refused(lab, version):
    # SECLEVEL=0 lets this client offer the old protocol at all (OpenSSL 3 refuses otherwise), so
    # the failure below is the server's refusal, not the client's.
    ctx = lab.tls_context(minimum=version, maximum=version, ciphers="DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as failure:
        lab.https("/", context=ctx)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(failure.value)


def test_sslscan_shows_only_tls12_and_tls13_with_intermediate_ciphers(lab):
    out = lab.lb.check_output("sslscan --no-colour 127.0.0.1:443")
    protocols = dict(re.findall(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)$", out, re.M))
    assert protocols == {
        "SSLv2": "disabled",
        "SSLv3": "disabled",
        "TLSv1.0": "disabled",
        "TLSv1.1": "disabled",
        "TLSv1.2": "enabled",
        "TLSv1.3": "enabled",
    }
    accepted = re.findall(r"^(?:Preferred|Accepted)\s+(TLSv1\.[23])\s+\d+ bits\s+(\S+)", out, re.M)
    assert {c for v, c in accepted if v == "TLSv1.2"} <= INTERMEDIATE_TLS12
    assert {c for v, c in accepted if v == "TLSv1.3"} <= TLS13
    assert accepted, out


def test_no_ocsp_stapling_for_a_certificate_without_responder(lab):
    servers = lab.lb.file("/etc/nginx/inkdeploy/servers.conf").content_string
    assert "ssl_stapling" not in servers
    assert "ssl_stapling" not in lab.lb.check_output("nginx -t 2>&1")


# --- HTTP behaviour -----------------------------------------------------------------------------


def test_http_redirects_to_https(lab):
    conn = http.client.HTTPConnection(lab.lb_address, 80, timeout=5)
    conn.request("GET", "/some/page?x=1")
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://{lab.lb_address}/some/page?x=1"


def test_hsts_header(lab):
    response, *_ = lab.https("/")
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"


def test_lb_healthz_is_answered_by_nginx(lab):
    response, body, *_ = lab.https("/healthz")
    assert response.status == 200
    assert json.loads(body) == {"status": "ok", "service": "nginx_lb", "host": "lb1"}
    assert response.getheader("X-App-Version") is None  # not proxied


def test_forwarded_headers_reach_the_app(lab):
    _, body, *_ = lab.https("/echo", headers={"X-Forwarded-For": "6.6.6.6"})
    sent = json.loads(body)["headers"]
    controller = lab.lb.check_output("echo $SSH_CONNECTION").split()[0]
    assert sent["X-Forwarded-For"] == controller  # the client-sent value is not trusted
    assert sent["X-Forwarded-Proto"] == "https"
    assert sent["X-Forwarded-Host"] == lab.lb_address
    assert sent["Host"] == lab.lb_address
    # Keep-alive to the upstream: HTTP/1.1 and no "Connection: close".
    assert "Connection" not in sent


def test_request_id_is_passed_through_or_generated(lab):
    rid = request_id()
    response, body, *_ = lab.https("/", headers={"X-Request-ID": rid})
    assert json.loads(body)["headers"]["X-Request-ID"] == rid
    assert response.getheader("X-Request-ID") == rid

    response, body, *_ = lab.https("/")
    generated = json.loads(body)["headers"]["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert response.getheader("X-Request-ID") == generated

    response, body, *_ = lab.https("/", headers={"X-Request-ID": "bad id; with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", json.loads(body)["headers"]["X-Request-ID"])


def test_stub_status_on_localhost_only(lab):
    out = lab.lb.check_output("curl -sS http://127.0.0.1:8080/stub_status")
    assert out.startswith("Active connections:")
    listeners = lab.lb.check_output("ss -Hltn 'sport = :8080'")
    assert [line.split()[3] for line in listeners.splitlines()] == ["127.0.0.1:8080"]
    with pytest.raises(OSError):
        socket.create_connection((lab.lb_address, 8080), timeout=3).close()


def test_json_access_log_records_upstream_and_version(lab):
    rid = request_id()
    lab.https("/logged", headers={"X-Request-ID": rid})
    line = lab.lb.check_output(
        f'grep -F \'"request_id":"{rid}"\' /var/log/nginx/inkdeploy-access.log'
    )
    entry = json.loads(line)
    assert entry["upstream_addr"] == f"{lab.app_address}:8001"
    assert entry["app_version"] == "blue-1"
    assert entry["upstream_status"] == "200"
    assert entry["status"] == 200
    assert entry["request"] == "GET /logged HTTP/1.1"
    for key in ("time", "remote_addr", "bytes_sent", "request_time", "upstream_response_time"):
        assert key in entry


def test_keepalive_connections_to_the_upstream(lab):
    lab.versions(5)
    established = lab.lb.check_output(f"ss -Htn state established 'dst {lab.app_address}:8001'")
    assert established.strip(), "nginx keeps idle connections to the blue slot open"


def test_rate_limit_answers_429(lab):
    """Far above rate and burst from one address over one connection: some requests get 429."""
    # Earlier tests' requests may have drained this address's bucket: give it time to refill
    # (burst 100 at 50 r/s takes 2 s), so a full burst is what nginx must let through.
    time.sleep(3)
    codes = lab.statuses(400)
    assert codes.get(429, 0) > 0, codes
    assert codes.get(200, 0) >= 100, codes  # the burst passes
    time.sleep(3)  # let this address's bucket refill before the next test


# --- weights, draining, broken changes ----------------------------------------------------------


def test_weights_move_traffic_to_green_with_one_reload(lab, restore_weights):
    cursor = lab.journal_cursor()
    started = time.monotonic()
    rc, out = lab.set_weights({"app1:blue": 0, "app1:green": 100})
    elapsed = time.monotonic() - started
    assert rc == 0, out
    assert lab.reloads_since(cursor) == 1
    # The play ends once the workers serve the new weights: no waiting here.
    assert set(lab.versions(20)) == {"green-1"}
    assert f"server {lab.app_address}:8001 down" in lab.upstreams_conf()
    print(f"lb-weights.yml took {elapsed:.1f} s")

    # The same weights again: nothing changes, no reload.
    cursor = lab.journal_cursor()
    rc, out = lab.set_weights({"app1:blue": 0, "app1:green": 100})
    assert rc == 0, out
    assert re.search(r"lb1\s+: ok=\d+\s+changed=0 ", out), out
    assert lab.reloads_since(cursor) == 0


def test_split_then_drain_a_slot(lab, restore_weights):
    rc, out = lab.set_weights({"app1:blue": 50, "app1:green": 50})
    assert rc == 0, out
    assert set(lab.versions(40)) == {"blue-1", "green-1"}

    rc, out = lab.set_weights({"app1:blue": 0, "app1:green": 50})
    assert rc == 0, out
    assert set(lab.versions(40)) == {"green-1"}


def test_a_full_role_run_keeps_the_running_weights(lab, restore_weights):
    rc, out = lab.set_weights({"app1:blue": 0, "app1:green": 100})
    assert rc == 0, out
    before = lab.upstreams_conf()
    rc, out = lab.run_playbook(SCENARIO / "lb_only.yml", {})
    assert rc == 0, out
    assert re.search(r"lb1\s+: ok=\d+\s+changed=0 ", out), out
    assert lab.upstreams_conf() == before


def test_draining_every_slot_is_refused(lab):
    before = lab.upstreams_conf()
    cursor = lab.journal_cursor()
    rc, out = lab.set_weights({"app1:blue": 0, "app1:green": 0})
    assert rc != 0
    assert "every slot of inkapp would be drained" in out
    assert lab.upstreams_conf() == before
    assert lab.reloads_since(cursor) == 0


def test_unknown_weight_key_is_refused(lab):
    rc, out = lab.set_weights({"app1:blue": 100, "app9:green": 10})
    assert rc != 0
    assert "unknown keys app9:green" in out


def test_broken_upstream_value_fails_and_lb_keeps_serving(lab):
    before = lab.upstreams_conf()
    cursor = lab.journal_cursor()
    rc, out = lab.set_weights(
        {"app1:blue": 0, "app1:green": 100},
        nginx_lb_upstream_fail_timeout="10s; bogus_directive on",
    )
    assert rc != 0
    assert 'unknown directive "bogus_directive"' in out
    assert lab.upstreams_conf() == before
    assert lab.reloads_since(cursor) == 0
    assert set(lab.versions(10)) == {"blue-1"}


def test_broken_server_directive_fails_the_role_and_lb_keeps_serving(lab):
    servers = "/etc/nginx/inkdeploy/servers.conf"
    before = lab.lb.file(servers).content_string
    cursor = lab.journal_cursor()
    rc, out = lab.run_playbook(
        SCENARIO / "lb_only.yml", {"nginx_lb_server_extra_directives": ["bogus_directive on;"]}
    )
    assert rc != 0
    assert 'unknown directive "bogus_directive"' in out
    assert lab.lb.file(servers).content_string == before
    assert lab.reloads_since(cursor) == 0
    response, *_ = lab.https("/")
    assert response.status == 200
    assert lab.lb.run("nginx -t").rc == 0


def test_a_failing_slot_is_skipped(lab, restore_weights):
    """Passive health: with green stopped, requests that hit it are retried on blue."""
    rc, out = lab.set_weights({"app1:blue": 50, "app1:green": 50})
    assert rc == 0, out
    lab.app.check_output("systemctl stop standin-app-green")
    try:
        assert set(lab.versions(40)) == {"blue-1"}
        line = lab.lb.check_output(
            "tail -n 40 /var/log/nginx/inkdeploy-access.log | grep -F ':8002' | tail -n 1 || true"
        )
        if line:  # a request that tried green first shows both attempts
            assert json.loads(line)["status"] == 200
    finally:
        lab.app.check_output("systemctl start standin-app-green")


def test_defaults_are_back(lab):
    """The tests above leave the lab as they found it."""
    assert (
        "inkdeploy-weights: "
        + json.dumps({f"inkapp:{k}": v for k, v in sorted(DEFAULT_WEIGHTS.items())})
        in lab.upstreams_conf()
    )
