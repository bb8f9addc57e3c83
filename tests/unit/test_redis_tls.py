"""Redis TLS (redis_tls): the orchestrator's RESP probes reach a TLS-only sentinel and verify it
against the internal Redis CA next to the inventory, or say why not, without a traceback.

A real TLS listener on loopback stands in for Sentinel; its certificate comes from a CA made
here the way the redis role's internal CA makes one (127.0.0.1 in the SANs).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from inkdeploy.config import Policy
from inkdeploy.inventory import Environment
from inkdeploy.pki import MissingCA
from inkdeploy.preflight import ask_resp, redis_tls, sentinel_tasks
from tests.unit.role_templates import render, role_defaults
from tests.unit.test_preflight import FakeSentinel
from tests.unit.test_status_data_tier import _ca_and_server_cert

PASSWORD = "unit-test-sentinel-password"  # noqa: S105 - a test value


class TlsSentinel(FakeSentinel):
    """FakeSentinel behind TLS only: every accepted connection is wrapped before it is read."""

    def __init__(self, cert: Path, key: Path, master: list[str]) -> None:
        super().__init__(master, password=PASSWORD)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        plain_accept = self.server.get_request
        self.handshakes_failed = 0

        def get_request() -> tuple[socket.socket, Any]:
            sock, address = plain_accept()
            try:
                return context.wrap_socket(sock, server_side=True), address
            except (OSError, ssl.SSLError):
                self.handshakes_failed += 1
                sock.close()
                raise

        self.server.get_request = get_request  # type: ignore[method-assign]


def env_for(port: int, inventory: Path, **hostvars: Any) -> Environment:
    values = {"ansible_host": "127.0.0.1", "redis_sentinel_port": port}
    values.update(hostvars)
    groups = {"sentinel": ["data1"], "redis": ["data1"]}
    policy = Policy.model_validate({})
    return Environment(inventory, "test", groups, {"data1": values}, policy)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TlsSentinel, Path]]:
    """A TLS sentinel whose certificate the CA in TMP/inventory/pki/redis signed."""
    inventory = tmp_path / "inventory" / "hosts.yml"
    _, cert, key = _ca_and_server_cert(inventory.parent / "pki" / "redis")
    with TlsSentinel(cert, key, ["10.0.0.5", "6379"]) as sentinel:
        yield sentinel, inventory


def ask(env: Environment) -> Any:
    tasks, _master, _auth = sentinel_tasks(env, 2.0)
    ((_kind, host, target, call),) = tasks
    assert (host, target) == ("data1", f"127.0.0.1:{env.hostvars['data1']['redis_sentinel_port']}")
    return call()


def test_with_redis_tls_the_probe_verifies_the_sentinel_against_the_inventorys_ca(
    served: tuple[TlsSentinel, Path],
) -> None:
    sentinel, inventory = served
    env = env_for(sentinel.port, inventory, redis_tls=True, redis_sentinel_password=PASSWORD)
    assert ask(env) == ["10.0.0.5", "6379"]
    assert sentinel.auths == [PASSWORD]  # the password went inside the TLS session


def test_a_plain_probe_of_a_tls_only_sentinel_gets_no_answer(
    served: tuple[TlsSentinel, Path],
) -> None:
    sentinel, inventory = served
    env = env_for(sentinel.port, inventory, redis_sentinel_password=PASSWORD)  # redis_tls unset
    with pytest.raises(ConnectionError, match="if it listens with TLS only, set redis_tls: true"):
        ask(env)
    assert sentinel.auths == []  # the password was never readable by the server's TLS layer


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory" / "hosts.yml"
    _ca_and_server_cert(inventory.parent / "pki" / "redis")  # what the inventory trusts
    _, cert, key = _ca_and_server_cert(tmp_path / "impostor")
    with TlsSentinel(cert, key, ["10.0.0.6", "6379"]) as impostor:
        env = env_for(impostor.port, inventory, redis_tls=True, redis_sentinel_password=PASSWORD)
        with pytest.raises(ssl.SSLCertVerificationError):
            ask(env)
    assert impostor.auths == []  # no password sent to a server that failed verification


def test_redis_pki_dir_from_the_inventory_wins_and_a_missing_ca_is_named(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory" / "hosts.yml"
    elsewhere = tmp_path / "vault" / "redis-pki"
    env = env_for(1, inventory, redis_tls="yes", redis_pki_dir=str(elsewhere))
    context = redis_tls(env, "data1")
    assert context is not None
    with pytest.raises(MissingCA, match=r"redis's CA certificate .*redis-pki/ca.crt is missing"):
        context()
    _ca_and_server_cert(elsewhere)
    assert isinstance(context(), ssl.SSLContext)
    assert redis_tls(env_for(1, inventory, redis_tls=False), "data1") is None
    assert redis_tls(env_for(1, inventory), "data1") is None


def test_ask_resp_over_tls_sends_auth_then_the_commands_on_one_connection(
    served: tuple[TlsSentinel, Path],
) -> None:
    sentinel, inventory = served
    env = env_for(sentinel.port, inventory, redis_tls=True)
    tls = redis_tls(env, "data1")
    replies = ask_resp(
        "127.0.0.1",
        sentinel.port,
        PASSWORD,
        [("SENTINEL", "get-master-addr-by-name", "inkdeploy")] * 2,
        2.0,
        tls,
    )
    assert replies == [["10.0.0.5", "6379"]] * 2
    assert sentinel.auths == [PASSWORD]


# --- what the roles write at first install ------------------------------------------------------

SERVER = {
    "__redis_address": "10.0.0.5",
    "__redis_master_address": "10.0.0.5",
    "redis_password": "p" * 16,
    "inventory_hostname": "redis1",
}
SENTINEL = {
    "__redis_sentinel_address": "10.0.0.5",
    "__redis_sentinel_master_address": "10.0.0.5",
    "redis_sentinel_password": "s" * 16,
    "redis_sentinel_redis_password": "p" * 16,
    "redis_sentinel_redis_port": 6379,
    "redis_sentinel_master_name": "inkdeploy",
    "inventory_hostname": "redis1",
}


def directives(text: str) -> dict[str, str]:
    """First word to the rest, for the uncommented lines of a redis.conf-style file."""
    lines = [line.split(None, 1) for line in text.splitlines() if line and line[0] != "#"]
    return {words[0]: words[1] if len(words) > 1 else "" for words in lines}


@pytest.mark.parametrize(
    ("role", "template", "variables", "port"),
    [
        ("redis", "etc/redis/redis.conf.j2", SERVER, "6379"),
        ("redis_sentinel", "etc/redis/sentinel.conf.j2", SENTINEL, "26379"),
    ],
)
def test_with_tls_the_plain_port_is_closed_and_replication_uses_tls(
    role: str, template: str, variables: dict[str, Any], port: str
) -> None:
    flag = "redis_tls" if role == "redis" else "redis_sentinel_tls"
    on = directives(render(role, template, **variables, **{flag: True}))
    assert on["port"] == "0" and on["tls-port"] == port
    assert on["tls-replication"] == "yes" and on["tls-auth-clients"] == "no"
    assert on["tls-ca-cert-file"] == "/etc/ssl/inkdeploy/redis/ca.crt"
    assert on["tls-protocols"] == '"TLSv1.2 TLSv1.3"'
    for value in (False, "false"):  # `-e redis_tls=false` arrives as a string
        off = directives(render(role, template, **variables, **{flag: value}))
        assert off["port"] == port
        assert not [key for key in off if key.startswith("tls-")]


def test_the_client_settings_carry_the_ca_only_with_tls() -> None:
    # the role's defaults are templates Ansible evaluates on use, as in a play
    defaults = {
        k: trust_as_template(v) if isinstance(v, str) else v
        for k, v in role_defaults("redis_sentinel").items()
    }

    def kwargs(tls: bool) -> Any:
        templar = Templar(loader=DataLoader(), variables={**defaults, "redis_tls": tls})
        return templar.template(trust_as_template(defaults["redis_sentinel_client_tls_kwargs"]))

    assert kwargs(True) == {
        "ssl": True,
        "ssl_ca_certs": "/etc/ssl/inkdeploy/redis-ca.crt",
        "ssl_cert_reqs": "required",
    }
    assert kwargs(False) == {}
