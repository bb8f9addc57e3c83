"""etcd is closed (issue 14): clients speak TLS only, with certificates from the etcd role's CA
on the controller; writes need a login, and Patroni's user may write its own namespace only.
Patroni keeps working through all that (a leader and two streaming replicas).

The controller (the admin network, which the firewall admits) has no etcd credentials;
backup1 is outside the firewall's etcd sources. Requests go to etcd's v3 JSON API (the gRPC
gateway Patroni uses as well)."""

from __future__ import annotations

import base64
import json
import shlex
import ssl
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import EPHEMERAL, INVENTORY, LEADER_ROLES, assert_member_certificate

# the members only; backup1 is reached through cluster.host()
testinfra_hosts = ["ansible://db"]

# etcd_pki_dir's default: {{ inventory_dir }}/pki/etcd
PKI = EPHEMERAL / "inventory" / "pki" / "etcd"
PROBE_KEY = "/service/inkdeploy-etcd-security-test"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_post(address: str, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    """POST BODY to etcd's v3 API on ADDRESS over https, trusting the etcd CA only."""
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    request = urllib.request.Request(
        f"https://{address}:2379/v3{path}", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def patroni_token(cluster) -> str:
    password = yaml.safe_load(INVENTORY.read_text())["all"]["vars"]["patroni_etcd_password"]
    address = next(iter(cluster.addresses.values()))
    status, answer = etcd_post(address, "/auth/authenticate",
                               {"name": "patroni", "password": password})  # fmt: skip
    assert status == 200, answer.get("error")
    return answer["token"]


def test_a_write_without_credentials_is_refused(cluster):
    for member, address in cluster.addresses.items():
        put = {"key": b64("/service/x"), "value": b64("y")}
        status, answer = etcd_post(address, "/kv/put", put)
        assert status != 200 and "user name is empty" in answer.get("error", ""), (member, answer)
        read = {"key": b64("/service/"), "range_end": b64("/service0")}
        status, answer = etcd_post(address, "/kv/range", read)
        assert status != 200 and "kvs" not in answer, (member, answer)


def test_a_host_outside_etcd_does_not_reach_it(cluster):
    """backup1 (no etcd member) tries `etcdctl put /service/x y`'s request: the default-deny
    firewall admits only the db and etcd hosts and the admin network to 2379, so nothing
    answers (the controller and a member show the login refusal)."""
    address = next(iter(cluster.addresses.values()))
    script = (
        "import json, ssl, sys, urllib.request, urllib.error\n"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE  # the refusal is the point, not who answers\n"
        f"req = urllib.request.Request('https://{address}:2379/v3/kv/put', method='POST',\n"
        "    data=json.dumps({'key': 'L3NlcnZpY2UveA==', 'value': 'eQ=='}).encode())\n"
        "try:\n"
        "    print(urllib.request.urlopen(req, timeout=5, context=ctx).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read().decode())\n"
        "except (urllib.error.URLError, OSError) as e:\n"
        "    print('no answer', e)\n"
    )
    out = cluster.host("backup1").check_output(f"python3 -c {shlex.quote(script)}")
    assert out.startswith("no answer") and "timed out" in out, out


def test_etcdctl_put_without_credentials_is_refused_on_a_member(host):
    result = host.run(
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/tls/ca.crt "
        "put /service/x y"
    )
    assert result.rc != 0 and "user name is empty" in result.stderr, result.stderr


def test_plain_http_gets_no_answer_from_the_client_port(cluster):
    for member, address in cluster.addresses.items():
        request = urllib.request.Request(
            f"http://{address}:2379/v3/kv/put", method="POST",
            data=json.dumps({"key": b64("/service/x"), "value": b64("y")}).encode(),
        )  # fmt: skip
        with pytest.raises(OSError) as raised:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 (a lab address)
        # the TLS-only listener closes the connection: no HTTP answer at all (curl: "Empty
        # reply from server"), not even an error status
        assert not isinstance(raised.value, urllib.error.HTTPError), (member, raised.value)


def test_patroni_user_writes_its_namespace_only(cluster, patroni_token):
    address = next(iter(cluster.addresses.values()))
    status, answer = etcd_post(address, "/kv/put", {"key": b64(PROBE_KEY), "value": b64("y")},
                               patroni_token)  # fmt: skip
    try:
        assert status == 200, answer
        status, answer = etcd_post(address, "/kv/put", {"key": b64("/other/x"), "value": b64("y")},
                                   patroni_token)  # fmt: skip
        assert status != 200 and "permission denied" in answer.get("error", ""), answer
        status, answer = etcd_post(address, "/auth/user/list", {}, patroni_token)
        assert status != 200 and "permission denied" in answer.get("error", ""), answer
    finally:
        etcd_post(address, "/kv/deleterange", {"key": b64(PROBE_KEY)}, patroni_token)


def test_patroni_keeps_a_leader_and_streaming_replicas(cluster):
    members = cluster.wait_for(
        lambda ms: (
            sum(m["role"] in LEADER_ROLES for m in ms) == 1
            and sum(m["state"] in ("running", "streaming") for m in ms) == 3
        ),
        60,
    )
    leaders = [m["name"] for m in members if m["role"] in LEADER_ROLES]
    assert len(leaders) == 1 and len(members) == 3, members


def test_member_tls_files_and_certificates(host, cluster):
    key = host.file("/etc/etcd/tls/member.key")
    assert (key.user, key.group, key.mode) == ("etcd", "etcd", 0o600)
    assert_member_certificate(host, cluster, PKI, "/etc/etcd/tls/member.crt")
    # Patroni trusts the same CA and logs in over https
    config = yaml.safe_load(host.file("/etc/patroni/config.yml").content_string)
    etcd3 = config["etcd3"]
    assert (etcd3["protocol"], etcd3["cacert"], etcd3["username"]) == (
        "https", "/etc/patroni/etcd-ca.crt", "patroni",
    )  # fmt: skip
    assert host.file("/etc/patroni/etcd-ca.crt").content_string.strip() == (
        (PKI / "ca.crt").read_text().strip()
    )
