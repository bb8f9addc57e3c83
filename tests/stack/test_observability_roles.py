"""The observability roles on the stack lab as site.yml left them: Elasticsearch, Logstash and
Kibana on the logging host, Grafana on the monitoring host (both data1 in the `small` topology),
Filebeat on every host. These are the checks of the former Molecule scenarios elk and grafana.

What can be checked depends on the package source (inventories/lab/group_vars/all.yml: local,
with inkdeploy_package_unavailable: skip):

- Always: what every role writes before its package install: configuration files (parsed, with
  the values the inventory implies, owners and modes), the certificates of the ELK and Grafana
  CAs that the roles keep on the controller next to the inventory (chain, names, key match), the
  dashboards, and the apt source of the local repository. And roles/vendor_package installing a
  Debian package on app1 and notifying its includer (files/vendor_package_probe.yml, the
  playbook that was the elk scenario's side effect; it purges the package again).
- Where a package is installed: its service, Elasticsearch's and Grafana's APIs, and an event
  written on lb1 and one on app1 that must reach Elasticsearch through Filebeat and Logstash.
  Without the package these tests are skipped with a reason that names the package source (the
  roles ended their play before the install). Besides the probe playbook, only these two write
  to the lab (a log line, a journal line; Grafana's test annotation is deleted again).

The files are read once per host (SNAPSHOT: one `lab exec` each, all hosts at once): with a
`lab exec` per file and per stat this module took four minutes instead of one.
"""

from __future__ import annotations

import base64
import configparser
import datetime
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtensionOID

from inkdeploy.lab.drill import inventory_address, inventory_groups, run_playbook
from inkdeploy.logstash_config import parse_logstash_config

from .conftest import REPO, Stack

pytestmark = pytest.mark.stack

# The hosts of the `small` topology (orchestrator/inkdeploy/lab/topologies/small.yml); the
# fixture checks that the lab has them, with these roles.
HOSTS = ("lb1", "lb2", "app1", "app2", "worker1", "data1", "backup1")
LOG = "data1"  # the logging group: Elasticsearch, Logstash, Kibana
MON = "data1"  # the monitoring group: Grafana (and the Prometheus its datasource points at)
LB = "lb1"  # a load balancer: Filebeat ships the Nginx access log
APP = "app1"  # an app host: Filebeat ships the Gunicorn access log; the probe playbook runs here

# Filebeat's inputs by host (roles/filebeat/vars/main.yml, __filebeat_inputs).
NGINX_INPUT = "inkdeploy-nginx-access"
GUNICORN_INPUT = "inkdeploy-gunicorn-inkapp"
JOURNALD_INPUT = "inkdeploy-journald"
FILEBEAT_INPUTS = {
    "lb1": [NGINX_INPUT, JOURNALD_INPUT],
    "lb2": [NGINX_INPUT, JOURNALD_INPUT],
    "app1": [GUNICORN_INPUT, JOURNALD_INPUT],
    "app2": [GUNICORN_INPUT, JOURNALD_INPUT],
    "worker1": [JOURNALD_INPUT],
    "data1": [JOURNALD_INPUT],
    "backup1": [JOURNALD_INPUT],
}

# roles/vendor_package writes a source here first and copies it into sources.list.d only once
# apt can read it.
APT_STAGING = "/var/lib/inkdeploy/apt-sources"
ELASTIC_DEBS = "the Elastic .deb files"
GRAFANA_DEBS = "the Grafana .deb file"
DASHBOARDS = sorted((REPO / "roles/grafana/files/dashboards").glob("*.json"))
PROBE_PLAYBOOK = Path(__file__).with_name("files") / "vendor_package_probe.yml"
# How the lab's group_vars build inkdeploy_local_repo_url from the apt proxy's host.
_GATEWAY_EXPR = re.compile(
    r"\{\{\s*common_apt_proxy\s*\|\s*ansible\.builtin\.urlsplit\('hostname'\)\s*\}\}"
)

# What the tests read on the hosts, fetched once per host with one `lab exec` each (SNAPSHOT,
# run by the hosts' python3): these files, and these directories with everything in them, as
# content, owner, group and mode; of LISTED directories only the names.
SNAPSHOT_TREES = (
    "/etc/elasticsearch",
    "/etc/logstash",
    "/etc/systemd/system/logstash.service.d",
    "/etc/kibana",
    "/etc/filebeat",
    "/etc/grafana",
    "/etc/apt/sources.list.d",
    "/etc/apt/apt.conf.d",
    APT_STAGING,
    "/var/lib/dpkg/status",
)
SNAPSHOT_LISTED = ("/var/lib/apt/lists",)
SNAPSHOT = """
import grp, json, os, pwd, stat, sys

def entry(path, content):
    st = os.lstat(path)
    mode = st.st_mode
    kind = "file" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else "other"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    found = {"type": kind, "owner": owner, "group": group, "mode": stat.S_IMODE(mode)}
    if kind == "directory":
        found["names"] = sorted(os.listdir(path))
    elif kind == "file" and content:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            found["text"] = f.read()
    return found

files = {}
for arg in sys.argv[1:]:
    how, _, top = arg.partition(":")
    if not os.path.lexists(top):
        continue
    files[top] = entry(top, how == "tree")
    if how == "tree" and files[top]["type"] == "directory":
        for root, dirs, names in os.walk(top):
            for name in dirs + names:
                files[os.path.join(root, name)] = entry(os.path.join(root, name), True)
print(json.dumps(files))
"""


def snapshot(stack: Stack, host: str) -> dict[str, dict[str, Any]]:
    """{path: {type, owner, group, mode, and text (files) or names (directories)}} of HOST."""
    args = [f"tree:{p}" for p in SNAPSHOT_TREES] + [f"list:{p}" for p in SNAPSHOT_LISTED]
    done = stack.on(host, "python3", "-c", SNAPSHOT, *args)
    assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


@dataclass
class Observability:
    stack: Stack
    groups: dict[str, list[str]]
    address: dict[str, str]
    secrets: dict[str, str]  # the lab's generated secrets (all.vars of its hosts.yml)
    settings: dict[str, Any]  # the lab's group_vars/all.yml
    gateway: str  # the lab bridge's address, where the hosts' apt proxy listens
    repo_url: str  # inkdeploy_local_repo_url as the hosts see it
    elk_pki: Path  # elasticsearch_pki_dir's default: {{ inventory_dir }}/pki/elk
    grafana_pki: Path  # grafana_pki_dir's default: {{ inventory_dir }}/pki/grafana
    snapshots: dict[str, dict[str, dict[str, Any]]]  # host: snapshot(stack, host)
    _repo_packages: list[set[str] | None] = field(default_factory=list)

    # --- the hosts

    def run(self, host: str, *cmd: str) -> str:
        done = self.stack.on(host, *cmd)
        assert done.returncode == 0, f"{host}: {' '.join(cmd)}: {done.stdout}{done.stderr}"
        return done.stdout

    def entry(self, host: str, path: str, kind: str) -> dict[str, Any]:
        found = self.snapshots[host].get(path)
        assert found is not None, f"{path} is missing on {host}"
        assert found["type"] == kind, f"{path} on {host} is no {kind}: {found['type']}"
        return found

    def read(self, host: str, path: str) -> str:
        return self.entry(host, path, "file")["text"]

    def listdir(self, host: str, path: str) -> list[str]:
        return self.entry(host, path, "directory")["names"]

    def lines(self, host: str, path: str) -> list[str]:
        return self.read(host, path).splitlines()

    def yaml(self, host: str, path: str) -> Any:
        return yaml.safe_load(self.read(host, path))

    def ini(self, host: str, path: str) -> configparser.RawConfigParser:
        ini = configparser.RawConfigParser(strict=True, interpolation=None)
        ini.read_string(self.read(host, path))
        return ini

    def assert_files(self, host: str, owner: str, group: str, mode: int, *paths: str) -> None:
        """Each of PATHS is a regular file of OWNER and GROUP with MODE."""
        for path in paths:
            found = self.entry(host, path, "file")
            shown = (found["owner"], found["group"], oct(found["mode"]))
            assert shown == (owner, group, oct(mode)), (host, path, shown)

    def installed(self, host: str, package: str) -> bool:
        """PACKAGE is installed on HOST (dpkg's status "install ok installed" or held)."""
        for block in self.read(host, "/var/lib/dpkg/status").split("\n\n"):
            fields = dict(re.findall(r"^([\w-]+): (.*)$", block, re.M))
            if fields.get("Package") == package:
                want, *state = fields.get("Status", "").split()
                if want in ("install", "hold") and state == ["ok", "installed"]:
                    return True
        return False

    # --- the package source

    def repo_packages(self) -> set[str] | None:
        """The packages the local repository lists (its Packages index), None if it does not
        answer. Asked once."""
        if not self._repo_packages:
            # Directly, as the hosts do (their apt.conf.d says DIRECT), not through a proxy.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(self.repo_url + "Packages", timeout=5) as response:
                    text = response.read().decode()
                names = set(re.findall(r"^Package: (\S+)$", text, re.M))
                self._repo_packages.append(names)
            except OSError:  # refused, timed out, or an HTTP error: the hosts get no index
                self._repo_packages.append(None)
        return self._repo_packages[0]

    def require(self, host: str, package: str, debs: str) -> None:
        """Skip, naming the package source, unless the role could install PACKAGE on HOST.
        DEBS says which .deb files would be needed ("the Elastic .deb files")."""
        if self.installed(host, package):
            return
        source = self.settings["inkdeploy_package_source"]
        unavailable = self.settings["inkdeploy_package_unavailable"]
        offered = self.repo_packages()
        # Only a source without the package excuses a missing one.
        assert source == "local" and unavailable == "skip", (
            f"{package} is not installed on {host} although site.yml ran with package source "
            f"{source!r} and inkdeploy_package_unavailable {unavailable!r}"
        )
        assert not offered or package not in offered, (
            f"{package} is not installed on {host} although {self.repo_url} offers it"
        )
        served = "which does not answer" if offered is None else f"{len(offered)} packages"
        pytest.skip(
            f"{package} is not installed on {host}: package source {source!r} "
            f"({self.repo_url}, {served}) has no {package} package, so the role ended its play "
            f"before the install (inkdeploy_package_unavailable: {unavailable}). Serve {debs} "
            "there (docs/observability-grafana-elk.md, Giving the lab the packages) and run "
            "site.yml to run this check."
        )

    # --- the APIs

    def es(
        self,
        path: str,
        user: str = "elastic",
        password: str | None = None,
        method: str = "GET",
        body: Any = None,
    ) -> tuple[int, Any]:
        if password is None:
            password = self.secrets["elasticsearch_elastic_password"]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            f"https://{self.address[LOG]}:9200/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=str(self.elk_pki / "ca.crt"))
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    @property
    def grafana_api(self) -> str:
        return f"https://{self.address[MON]}:3000"

    def grafana(
        self,
        path: str,
        method: str = "GET",
        body: Any = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        request = urllib.request.Request(  # noqa: S310 (https://data1:3000, from the inventory)
            self.grafana_api + path,
            method=method,
            headers=headers,
            data=None if body is None else json.dumps(body).encode(),
        )
        context = ssl.create_default_context(cafile=str(self.grafana_pki / "ca.crt"))
        try:
            with urllib.request.urlopen(request, timeout=15, context=context) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def grafana_admin(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        password = self.secrets["grafana_admin_password"]
        return self.grafana(path, user="admin", password=password, **kwargs)


@pytest.fixture(scope="module")
def obs(stack: Stack) -> Observability:
    inventory = stack.inventory
    groups = inventory_groups(inventory)
    inventory_all = yaml.safe_load(inventory.read_text())["all"]
    assert sorted(inventory_all["hosts"]) == sorted(HOSTS), "these tests need the small topology"
    assert groups["logging"] == [LOG] and groups["monitoring"] == [MON], groups
    assert sorted(groups["lb"] + groups["app"]) == ["app1", "app2", "lb1", "lb2"], groups
    values = inventory_all["vars"]
    settings = yaml.safe_load((inventory.parent / "group_vars/all.yml").read_text())
    gateway = urllib.parse.urlsplit(values["common_apt_proxy"]).hostname
    assert gateway, values["common_apt_proxy"]
    repo_url = _GATEWAY_EXPR.sub(gateway, settings["inkdeploy_local_repo_url"])
    assert "{" not in repo_url, f"cannot tell inkdeploy_local_repo_url's value: {repo_url}"
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        snapshots = dict(zip(HOSTS, pool.map(partial(snapshot, stack), HOSTS), strict=True))
    return Observability(
        stack=stack,
        groups=groups,
        address={host: inventory_address(inventory, host) for host in HOSTS},
        secrets=stack.secrets(),
        settings=settings,
        gateway=gateway,
        repo_url=repo_url,
        elk_pki=inventory.parent / "pki/elk",
        grafana_pki=inventory.parent / "pki/grafana",
        snapshots=snapshots,
    )


# --------------------------------------------------------------------------- the package source


@pytest.mark.parametrize(
    ("host", "package"),
    [(LOG, "elasticsearch"), (LOG, "logstash"), (LOG, "kibana")]
    + [(host, "filebeat") for host in HOSTS],
)
def test_package_installed_from_the_package_source(
    obs: Observability, host: str, package: str
) -> None:
    """Installed, or reported as skipped with the package source named."""
    obs.require(host, package, ELASTIC_DEBS)
    assert obs.installed(host, package)


def test_grafana_installed_from_the_package_source(obs: Observability) -> None:
    """Installed and enabled, or reported as skipped with the package source named."""
    obs.require(MON, "grafana", GRAFANA_DEBS)
    assert obs.run(MON, "systemctl", "is-enabled", "grafana-server").strip() == "enabled"


@pytest.mark.parametrize("host", HOSTS)
def test_hosts_read_the_local_repository(obs: Observability, host: str) -> None:
    """Every host has Filebeat, so every host got the local repository's source; the vendors'
    sources (Elastic, Grafana) are not configured when the source is local."""
    staged = obs.listdir(host, APT_STAGING)
    local = [s for s in staged if s.startswith("inkdeploy-local-")]
    assert len(local) == 1, (host, staged)
    lines = obs.lines(host, f"{APT_STAGING}/{local[0]}")
    assert f"URIs: {obs.repo_url}" in lines
    assert "Trusted: yes" in lines
    sources = obs.listdir(host, "/etc/apt/sources.list.d")
    vendors = ("inkdeploy-elastic", "inkdeploy-grafana")
    assert not any(s.startswith(vendors) for s in sources + staged), (host, sources, staged)
    proxy = obs.lines(host, f"/etc/apt/apt.conf.d/80{local[0].removesuffix('.sources')}")
    assert f'Acquire::http::Proxy::{obs.gateway} "DIRECT";' in proxy
    lists = obs.listdir(host, "/var/lib/apt/lists")
    prefix = f"{urllib.parse.urlsplit(obs.repo_url).netloc}_"
    fetched = [f for f in lists if f.startswith(prefix) and f.endswith("_Release")]
    if obs.repo_packages() is not None:
        # apt fetched the repository's Release file (the roles' targeted apt-get update) and
        # the roles enabled the source.
        assert local[0] in sources, (host, sources)
        enabled = obs.read(host, f"/etc/apt/sources.list.d/{local[0]}")
        assert enabled == obs.read(host, f"{APT_STAGING}/{local[0]}"), host
        assert fetched, (host, lists)
    else:
        # Nothing serves the repository: a source apt cannot read is never left in
        # sources.list.d (it would break every later apt-get update on the host).
        assert local[0] not in sources, (host, sources)
        assert not fetched, (host, lists)


# ------------------------------------------------------------------------- written before install


def test_elasticsearch_configuration(obs: Observability) -> None:
    path = "/etc/elasticsearch/elasticsearch.yml"
    obs.assert_files(LOG, "root", "elasticsearch", 0o660, path)
    config = obs.yaml(LOG, path)
    assert config["network.host"] == obs.address[LOG]
    assert config["discovery.type"] == "single-node"
    assert config["xpack.security.enabled"] is True
    tls = [
        config[f"xpack.security.{layer}.ssl.{key}"]
        for layer in ("http", "transport")
        for key in ("key", "certificate")
    ]
    for path in tls:
        obs.entry(LOG, path, "file")
    heap = obs.settings["elasticsearch_heap_size"]
    heap_options = obs.lines(LOG, "/etc/elasticsearch/jvm.options.d/inkdeploy-heap.options")
    assert f"-Xms{heap}" in heap_options and f"-Xmx{heap}" in heap_options


def test_logstash_configuration(obs: Observability) -> None:
    pipeline = "/etc/logstash/conf.d/inkdeploy/pipeline.conf"
    obs.assert_files(LOG, "root", "logstash", 0o640, pipeline)
    text = obs.read(LOG, pipeline)
    sections = parse_logstash_config(text)
    assert sections["input"] == ["beats"] and sections["output"] == ["elasticsearch"]
    assert f'host => "{obs.address[LOG]}"' in text
    assert f'hosts => ["https://{obs.address[LOG]}:9200"]' in text
    # The password is in the service's environment file only, readable by root alone.
    obs.assert_files(LOG, "root", "root", 0o600, "/etc/logstash/inkdeploy.env")
    password = obs.secrets["elasticsearch_logstash_writer_password"]
    assert password not in text
    env = obs.lines(LOG, "/etc/logstash/inkdeploy.env")
    assert f"INKDEPLOY_ES_PASSWORD='{password}'" in env
    heap = obs.settings["logstash_heap_size"]
    assert f"LS_JAVA_OPTS='-Xms{heap} -Xmx{heap}'" in env
    dropin = obs.lines(LOG, "/etc/systemd/system/logstash.service.d/inkdeploy.conf")
    assert "EnvironmentFile=/etc/logstash/inkdeploy.env" in dropin


def test_kibana_configuration(obs: Observability) -> None:
    path = "/etc/kibana/kibana.yml"
    obs.assert_files(LOG, "root", "kibana", 0o660, path)
    config = obs.yaml(LOG, path)
    assert config["elasticsearch.hosts"] == [f"https://{obs.address[LOG]}:9200"]
    assert config["server.host"] == obs.address[LOG]
    assert config["elasticsearch.password"] == obs.secrets["elasticsearch_kibana_system_password"]


@pytest.mark.parametrize(("host", "inputs"), FILEBEAT_INPUTS.items())
def test_filebeat_configuration(obs: Observability, host: str, inputs: list[str]) -> None:
    # The table above agrees with the lab's groups: Nginx's log on lb hosts, Gunicorn's on app.
    assert (NGINX_INPUT in inputs) == (host in obs.groups["lb"])
    assert (GUNICORN_INPUT in inputs) == (host in obs.groups["app"])
    path = "/etc/filebeat/filebeat.yml"
    # Filebeat refuses a configuration that is not root's or that others may write.
    obs.assert_files(host, "root", "root", 0o600, path)
    config = obs.yaml(host, path)
    assert [i["id"] for i in config["filebeat.inputs"]] == inputs
    assert config["output.logstash"]["hosts"] == [f"{obs.address[LOG]}:5044"]


CERTIFICATES = [
    (LOG, "/etc/elasticsearch/inkdeploy-tls", "node", "elasticsearch", 0o640),
    (LOG, "/etc/logstash/inkdeploy-tls", "logstash", "logstash", 0o640),
    (LOG, "/etc/kibana/inkdeploy-tls", "kibana", "kibana", 0o640),
] + [(host, "/etc/filebeat/inkdeploy-tls", "filebeat", "root", 0o600) for host in HOSTS]


@pytest.mark.parametrize(("host", "directory", "name", "group", "key_mode"), CERTIFICATES)
def test_certificates_come_from_the_elk_ca(
    obs: Observability, host: str, directory: str, name: str, group: str, key_mode: int
) -> None:
    ca_pem = (obs.elk_pki / "ca.crt").read_text()
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert obs.read(host, f"{directory}/ca.crt").strip() == ca_pem.strip()
    cert = x509.load_pem_x509_certificate(obs.read(host, f"{directory}/{name}.crt").encode())
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    assert cert.issuer == ca.subject
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert host in sans.get_values_for_type(x509.DNSName)
    assert obs.address[host] in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    key_text = obs.read(host, f"{directory}/{name}.key")
    assert key_text.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Logstash needs
    key = load_pem_private_key(key_text.encode(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    obs.assert_files(host, "root", group, key_mode, f"{directory}/{name}.key")


def test_the_ca_keys_stay_on_the_controller(obs: Observability) -> None:
    """The ELK CA's key (and the Grafana CA's) is on the controller only, readable by its owner:
    no file under /etc or /var/lib of any host holds a line of it."""
    patterns = []
    for pki in (obs.elk_pki, obs.grafana_pki):
        assert (pki / "ca.key").stat().st_mode & 0o077 == 0, pki
        patterns += ["-e", (pki / "ca.key").read_text().splitlines()[1]]
    script = 'grep -rlF "$@" /etc /var/lib 2>/dev/null; echo "grep exit $?"'

    def search(host: str) -> tuple[str, str]:
        return host, obs.run(host, "sh", "-c", script, "sh", *patterns)

    with ThreadPoolExecutor(len(HOSTS)) as pool:
        for host, shown in pool.map(search, HOSTS):
            *found, status = shown.splitlines()
            # 1: no match; 2: no match, but some special file could not be read
            assert status in ("grep exit 1", "grep exit 2"), (host, shown)
            assert found == [], (host, found)


def test_grafana_ini(obs: Observability) -> None:
    path = "/etc/grafana/grafana.ini"
    obs.assert_files(MON, "root", "grafana", 0o640, path)
    ini = obs.ini(MON, path)
    assert ini.get("server", "http_addr") == obs.address[MON]
    assert ini.get("server", "http_port") == "3000"
    assert ini.get("auth.anonymous", "enabled") == "false"
    assert ini.get("users", "allow_sign_up") == "false"
    assert ini.get("security", "admin_user") == "admin"
    password = obs.secrets["grafana_admin_password"]
    assert ini.get("security", "admin_password") == f'"""{password}"""'


def test_grafana_serves_https_with_a_certificate_from_the_internal_ca(obs: Observability) -> None:
    """Written before the package is installed: key, certificate and CA in /etc/grafana/tls
    (the key readable by the grafana group only), grafana.ini pointing at them."""
    ini = obs.ini(MON, "/etc/grafana/grafana.ini")
    assert ini.get("server", "protocol") == "https"
    assert ini.get("server", "cert_file") == "/etc/grafana/tls/grafana.crt"
    assert ini.get("server", "cert_key") == "/etc/grafana/tls/grafana.key"
    assert ini.get("server", "root_url") == f"https://{obs.address[MON]}:3000/"
    assert ini.get("security", "cookie_secure") == "true"
    obs.assert_files(MON, "root", "grafana", 0o640, "/etc/grafana/tls/grafana.key")
    obs.assert_files(MON, "root", "grafana", 0o644, "/etc/grafana/tls/grafana.crt")
    served = obs.read(MON, "/etc/grafana/tls/grafana.crt").strip()
    assert served == (obs.grafana_pki / f"{MON}.crt").read_text().strip()
    ca_pem = (obs.grafana_pki / "ca.crt").read_text()
    assert obs.read(MON, "/etc/grafana/tls/ca.crt").strip() == ca_pem.strip()
    cert = x509.load_pem_x509_certificate(served.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert obs.address[MON] in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=366), lifetime
    assert (obs.grafana_pki / "ca.key").stat().st_mode & 0o077 == 0


def test_datasources(obs: Observability) -> None:
    path = "/etc/grafana/provisioning/datasources/inkdeploy.yaml"
    obs.assert_files(MON, "root", "grafana", 0o640, path)
    doc = obs.yaml(MON, path)
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    assert set(by_uid) == {"inkdeploy-prometheus", "inkdeploy-elasticsearch"}
    assert by_uid["inkdeploy-prometheus"]["url"] == f"http://{obs.address[MON]}:9090"
    elasticsearch = by_uid["inkdeploy-elasticsearch"]
    assert elasticsearch["url"] == f"https://{obs.address[LOG]}:9200"
    ca = (obs.elk_pki / "ca.crt").read_text()  # grafana_elasticsearch_ca_file's default
    assert elasticsearch["secureJsonData"]["tlsCACert"].strip() == ca.strip()
    assert elasticsearch["basicAuthUser"] == "grafana_reader"


def test_dashboards_are_the_roles_files(obs: Observability) -> None:
    provider = obs.yaml(MON, "/etc/grafana/provisioning/dashboards/inkdeploy.yaml")
    directory = provider["providers"][0]["options"]["path"]
    listed = obs.listdir(MON, directory)
    assert listed == [p.name for p in DASHBOARDS]
    paths = [f"{directory}/{p.name}" for p in DASHBOARDS]
    obs.assert_files(MON, "root", "grafana", 0o640, *paths)
    for dashboard, path in zip(DASHBOARDS, paths, strict=True):
        assert json.loads(obs.read(MON, path)) == json.loads(dashboard.read_text()), path


# --------------------------------------------------------------------------- services (installed)


def test_elasticsearch_serves_with_security(obs: Observability) -> None:
    obs.require(LOG, "elasticsearch", ELASTIC_DEBS)
    status, health = obs.es("_cluster/health?wait_for_status=yellow&timeout=60s")
    assert status == 200 and health["status"] in ("yellow", "green"), health
    assert obs.es("", password="wrong-password")[0] == 401  # noqa: S106
    for user, variable in [
        ("kibana_system", "elasticsearch_kibana_system_password"),
        ("logstash_writer", "elasticsearch_logstash_writer_password"),
        ("grafana_reader", "elasticsearch_grafana_reader_password"),
    ]:
        status, _ = obs.es("_security/_authenticate", user=user, password=obs.secrets[variable])
        assert status == 200, user
    status, policy = obs.es("_ilm/policy/inkdeploy-logs")
    assert status == 200 and list(policy["inkdeploy-logs"]["policy"]["phases"]) == ["hot", "delete"]
    status, template = obs.es("_index_template/inkdeploy-logs")
    assert status == 200, template


def test_logstash_kibana_and_filebeat_run(obs: Observability) -> None:
    obs.require(LOG, "logstash", ELASTIC_DEBS)
    obs.require(LOG, "kibana", ELASTIC_DEBS)
    for host in HOSTS:
        obs.require(host, "filebeat", ELASTIC_DEBS)
    assert obs.run(LOG, "systemctl", "is-active", "logstash", "kibana").split() == ["active"] * 2
    listening = obs.run(LOG, "ss", "-Hltn", "sport = :5044").split()
    assert f"{obs.address[LOG]}:5044" in listening, listening
    for host in HOSTS:
        assert obs.run(host, "systemctl", "is-active", "filebeat").strip() == "active", host


def _search(obs: Observability, index: str, query: dict[str, Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, answer = obs.es(f"{index}/_search", method="POST", body={"query": query})
        hits = answer.get("hits", {}).get("hits", []) if status == 200 else []
        if hits:
            return hits[0]["_source"]
        time.sleep(3)
    return None


def test_an_access_log_line_on_lb1_reaches_elasticsearch_parsed(obs: Observability) -> None:
    obs.require(LOG, "elasticsearch", ELASTIC_DEBS)
    obs.require(LOG, "logstash", ELASTIC_DEBS)
    obs.require(LB, "filebeat", ELASTIC_DEBS)
    request_id = uuid.uuid4().hex
    line = json.dumps(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "remote_addr": "10.9.8.7",
            "request_id": request_id,
            "host": "www.example.com",
            "request": "GET /healthz?probe=1 HTTP/1.1",
            "status": 200,
            "bytes_sent": 123,
            "request_time": 0.012,
            "upstream_addr": "10.0.0.2:8001",
            "upstream_status": "200",
            "upstream_response_time": "0.011",
            "app_version": "1.2.3",
            "http_user_agent": "inkdeploy-stack-test",
            "ssl_protocol": "TLSv1.3",
        }
    )
    # One made-up line in the LB's access log (mtail counts it as one more 200 response).
    append = 'printf "%s\\n" "$1" >> /var/log/nginx/inkdeploy-access.log'
    obs.run(LB, "sh", "-c", append, "sh", line)
    event = _search(obs, "logs-inkdeploy.nginx-default", {"term": {"http.request.id": request_id}})
    assert event, f"request {request_id} did not reach logs-inkdeploy.nginx-default"
    assert event["http"]["response"]["status_code"] == 200
    assert event["http"]["request"]["method"] == "GET"
    assert event["url"]["original"] == "/healthz?probe=1"
    assert event["source"]["ip"] == "10.9.8.7"
    assert event["service"]["version"] == "1.2.3"
    assert event["event"]["duration"] == 12_000_000
    assert event["host"]["name"] == LB


def test_a_journal_line_on_app1_reaches_elasticsearch(obs: Observability) -> None:
    obs.require(LOG, "elasticsearch", ELASTIC_DEBS)
    obs.require(LOG, "logstash", ELASTIC_DEBS)
    obs.require(APP, "filebeat", ELASTIC_DEBS)
    marker = f"inkdeploy-stack-elk-{uuid.uuid4().hex}"
    obs.run(APP, "sh", "-c", 'echo "$1" | systemd-cat -t inkdeploy-stack-elk', "sh", marker)
    event = _search(obs, "logs-inkdeploy.journald-default", {"match_phrase": {"message": marker}})
    assert event, f"{marker} did not reach logs-inkdeploy.journald-default"
    assert event["data_stream"]["dataset"] == "inkdeploy.journald"
    assert event["host"]["name"] == APP


def test_grafana_answers_https_only(obs: Observability) -> None:
    obs.require(MON, "grafana", GRAFANA_DEBS)
    status, health = obs.grafana("/api/health")
    assert status == 200 and health["database"] == "ok"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{obs.address[MON]}:3000/api/health", timeout=5)


def test_the_api_lists_the_provisioned_datasources_and_dashboards(obs: Observability) -> None:
    obs.require(MON, "grafana", GRAFANA_DEBS)
    assert obs.grafana("/api/health")[0] == 200
    assert obs.grafana("/api/datasources")[0] == 401  # no anonymous access
    status, datasources = obs.grafana_admin("/api/datasources")
    assert status == 200
    assert {d["uid"] for d in datasources} >= {"inkdeploy-prometheus", "inkdeploy-elasticsearch"}
    expected = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    deadline = time.monotonic() + 60
    found: set[str] = set()
    while time.monotonic() < deadline and found != expected:
        status, results = obs.grafana_admin("/api/search?type=dash-db&tag=inkdeploy")
        found = {r["uid"] for r in results or []}
        time.sleep(2)
    assert found == expected


def test_the_orchestrator_token_posts_deploy_annotations(obs: Observability) -> None:
    obs.require(MON, "grafana", GRAFANA_DEBS)
    # grafana_annotations_token_file's default:
    # {{ inventory_dir }}/pki/grafana/{{ inventory_hostname }}.annotations-token
    token_file = obs.grafana_pki / f"{MON}.annotations-token"
    assert token_file.stat().st_mode & 0o077 == 0
    token = token_file.read_text().strip()
    now = int(time.time() * 1000)
    status, created = obs.grafana(
        "/api/annotations",
        method="POST",
        token=token,
        body={"time": now, "tags": ["inkdeploy", "stack-test"], "text": "stack test annotation"},
    )
    assert status == 200, created
    status, found = obs.grafana("/api/annotations?tags=stack-test&limit=10", token=token)
    assert status == 200 and created["id"] in [a["id"] for a in found]
    assert obs.grafana(f"/api/annotations/{created['id']}", method="DELETE", token=token)[0] == 200


# --------------------------------------------------------------------------- roles/vendor_package


def test_vendor_package_installs_and_notifies_its_includer(stack: Stack) -> None:
    """files/vendor_package_probe.yml on app1 (its probe role is in files/roles, where Ansible
    looks next to the playbook): the install notifies the including role's handler once, a
    second run nothing, a package no source offers fails with the reason; hello is purged."""
    # run_playbook runs playbooks/NAME: an absolute path replaces playbooks/ (pathlib's /).
    run = run_playbook(str(PROBE_PLAYBOOK), stack.inventory, timeout=900)
    assert run.rc == 0, run.tail()
    assert set(run.recap) == {APP} and run.failed_hosts == [], run.recap
    assert stack.on(APP, "dpkg-query", "--show", "hello").returncode != 0, "hello was not purged"
