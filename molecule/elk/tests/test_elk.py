"""Verify the ELK roles on the scenario's lab hosts (pytest-testinfra, ansible backend).

Run by `molecule verify -s elk`. What can be checked depends on the package source:

- Always: what every role writes before its package install: configuration files (parsed, with
  the values the inventory implies, owners and modes), the certificates from the ELK CA on the
  controller (chain, names, key match), and the apt source of the local repository.
- Where a package is installed: its service, and an event written on web1 that must reach
  Elasticsearch through Filebeat and Logstash. Without the package these tests are skipped with
  a reason that names the package source (the roles ended their play before the install).
"""

import base64
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import testinfra
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from inkdeploy.logstash_config import parse_logstash_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
from vendor_repo import VendorRepo, scenario_vars

SCENARIO_VARS = scenario_vars(__file__)


class Lab:
    def __init__(self, inventory):
        from testinfra.utils.ansible_runner import AnsibleRunner

        runner = AnsibleRunner.get_runner(inventory)
        self.hosts = {
            name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
            for name in ("log1", "web1")
        }
        self.address = {name: runner.get_variables(name)["ansible_host"] for name in self.hosts}
        self.repo = VendorRepo(runner.get_variables("log1"), SCENARIO_VARS)
        # elasticsearch_pki_dir in molecule.yml: next to Molecule's inventory directory.
        inventory_dir = Path(inventory) if Path(inventory).is_dir() else Path(inventory).parent
        self.pki = inventory_dir.parent / "pki/elk"

    def installed(self, host, package):
        return self.hosts[host].package(package).is_installed

    def require(self, host, package):
        """Skip, naming the package source, unless the role could install PACKAGE on HOST."""
        self.repo.require(self.hosts[host], host, package, "the Elastic .deb files")

    def read(self, host, path):
        return self.hosts[host].file(path).content_string

    def lines(self, host, path):
        return self.read(host, path).splitlines()

    def yaml(self, host, path):
        return yaml.safe_load(self.read(host, path))

    def es(self, path, user="elastic", password=None, method="GET", body=None):
        password = password or SCENARIO_VARS["elasticsearch_elastic_password"]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            f"https://{self.address['log1']}:9200/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Basic {token}",
                "Content-Type": "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="session")
def lab(pytestconfig):
    return Lab(pytestconfig.option.ansible_inventory)


def assert_file(host, path, owner, group, mode):
    f = host.file(path)
    assert f.is_file, path
    assert (f.user, f.group, f.mode) == (owner, group, mode), path


# --------------------------------------------------------------------------- the package source


@pytest.mark.parametrize(
    ("host", "package"),
    [
        ("log1", "elasticsearch"),
        ("log1", "logstash"),
        ("log1", "kibana"),
        ("log1", "filebeat"),
        ("web1", "filebeat"),
    ],
)
def test_package_installed_from_the_package_source(lab, host, package):
    """Installed, or reported as skipped with the package source named."""
    lab.require(host, package)
    assert lab.installed(host, package)


def test_hosts_read_the_local_repository(lab):
    for name, host in lab.hosts.items():
        sources = host.run("ls /etc/apt/sources.list.d/").stdout.split()
        local = [s for s in sources if s.startswith("inkdeploy-local-")]
        assert len(local) == 1, (name, sources)
        lines = lab.lines(name, f"/etc/apt/sources.list.d/{local[0]}")
        assert f"URIs: {lab.repo.url}" in lines
        assert "Trusted: yes" in lines
        # The vendor source is not configured when the source is local.
        assert not any(s.startswith("inkdeploy-elastic") for s in sources), (name, sources)
        proxy = host.run("cat /etc/apt/apt.conf.d/80inkdeploy-local-*").stdout
        assert f'Acquire::http::Proxy::{lab.repo.gateway} "DIRECT";' in proxy
        # apt fetched the repository's Release file (the roles' targeted apt-get update).
        lists = host.run("ls /var/lib/apt/lists/").stdout.split()
        prefix = f"{lab.repo.gateway}:{lab.repo.port}_"
        assert any(f.startswith(prefix) and f.endswith("_Release") for f in lists), lists


# ------------------------------------------------------------------------- written before install


def test_elasticsearch_configuration(lab):
    path = "/etc/elasticsearch/elasticsearch.yml"
    assert_file(lab.hosts["log1"], path, "root", "elasticsearch", 0o660)
    config = lab.yaml("log1", path)
    assert config["network.host"] == lab.address["log1"]
    assert config["discovery.type"] == "single-node"
    assert config["xpack.security.enabled"] is True
    for layer in ("http", "transport"):
        for key in ("key", "certificate"):
            assert lab.hosts["log1"].file(config[f"xpack.security.{layer}.ssl.{key}"]).is_file
    heap_options = "/etc/elasticsearch/jvm.options.d/inkdeploy-heap.options"
    assert "-Xmx512m" in lab.lines("log1", heap_options)


def test_logstash_configuration(lab):
    pipeline = "/etc/logstash/conf.d/inkdeploy/pipeline.conf"
    assert_file(lab.hosts["log1"], pipeline, "root", "logstash", 0o640)
    text = lab.read("log1", pipeline)
    sections = parse_logstash_config(text)
    assert sections["input"] == ["beats"] and sections["output"] == ["elasticsearch"]
    assert f'host => "{lab.address["log1"]}"' in text
    assert f'hosts => ["https://{lab.address["log1"]}:9200"]' in text
    # The password is in the service's environment file only, readable by root alone.
    assert_file(lab.hosts["log1"], "/etc/logstash/inkdeploy.env", "root", "root", 0o600)
    assert SCENARIO_VARS["elasticsearch_logstash_writer_password"] not in text
    env = lab.lines("log1", "/etc/logstash/inkdeploy.env")
    password = SCENARIO_VARS["elasticsearch_logstash_writer_password"]
    assert f"INKDEPLOY_ES_PASSWORD='{password}'" in env
    assert "LS_JAVA_OPTS='-Xms512m -Xmx512m'" in env
    dropin = lab.lines("log1", "/etc/systemd/system/logstash.service.d/inkdeploy.conf")
    assert "EnvironmentFile=/etc/logstash/inkdeploy.env" in dropin


def test_kibana_configuration(lab):
    path = "/etc/kibana/kibana.yml"
    assert_file(lab.hosts["log1"], path, "root", "kibana", 0o660)
    config = lab.yaml("log1", path)
    assert config["elasticsearch.hosts"] == [f"https://{lab.address['log1']}:9200"]
    assert config["server.host"] == lab.address["log1"]
    assert config["elasticsearch.password"] == SCENARIO_VARS["elasticsearch_kibana_system_password"]


@pytest.mark.parametrize(
    ("host", "inputs"),
    [
        ("web1", ["inkdeploy-nginx-access", "inkdeploy-gunicorn-inkapp", "inkdeploy-journald"]),
        ("log1", ["inkdeploy-journald"]),
    ],
)
def test_filebeat_configuration(lab, host, inputs):
    path = "/etc/filebeat/filebeat.yml"
    # Filebeat refuses a configuration that is not root's or that others may write.
    assert_file(lab.hosts[host], path, "root", "root", 0o600)
    config = lab.yaml(host, path)
    assert [i["id"] for i in config["filebeat.inputs"]] == inputs
    assert config["output.logstash"]["hosts"] == [f"{lab.address['log1']}:5044"]


CERTIFICATES = [
    ("log1", "/etc/elasticsearch/inkdeploy-tls", "node", "elasticsearch", 0o640),
    ("log1", "/etc/logstash/inkdeploy-tls", "logstash", "logstash", 0o640),
    ("log1", "/etc/kibana/inkdeploy-tls", "kibana", "kibana", 0o640),
    ("log1", "/etc/filebeat/inkdeploy-tls", "filebeat", "root", 0o600),
    ("web1", "/etc/filebeat/inkdeploy-tls", "filebeat", "root", 0o600),
]


@pytest.mark.parametrize(("host", "directory", "name", "group", "key_mode"), CERTIFICATES)
def test_certificates_come_from_the_elk_ca(lab, host, directory, name, group, key_mode):
    ca = x509.load_pem_x509_certificate((lab.pki / "ca.crt").read_bytes())
    assert lab.read(host, f"{directory}/ca.crt").strip() == (lab.pki / "ca.crt").read_text().strip()
    cert = x509.load_pem_x509_certificate(lab.read(host, f"{directory}/{name}.crt").encode())
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    assert cert.issuer == ca.subject
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert host in sans.get_values_for_type(x509.DNSName)
    assert lab.address[host] in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    key_text = lab.read(host, f"{directory}/{name}.key")
    assert key_text.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Logstash needs
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_text.encode(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert_file(lab.hosts[host], f"{directory}/{name}.key", "root", group, key_mode)


def test_the_ca_key_stays_on_the_controller(lab):
    ca_key = (lab.pki / "ca.key").read_text().splitlines()
    assert (lab.pki / "ca.key").stat().st_mode & 0o077 == 0
    for name, host in lab.hosts.items():
        found = host.run(f"grep -rlF -e '{ca_key[1]}' /etc /var/lib 2>/dev/null").stdout.split()
        assert found == [], (name, found)


# --------------------------------------------------------------------------- services (installed)


def test_elasticsearch_serves_with_security(lab):
    lab.require("log1", "elasticsearch")
    status, health = lab.es("_cluster/health?wait_for_status=yellow&timeout=60s")
    assert status == 200 and health["status"] in ("yellow", "green"), health
    assert lab.es("", password="wrong-password")[0] == 401  # noqa: S106
    for user, variable in [
        ("kibana_system", "elasticsearch_kibana_system_password"),
        ("logstash_writer", "elasticsearch_logstash_writer_password"),
        ("grafana_reader", "elasticsearch_grafana_reader_password"),
    ]:
        status, _ = lab.es("_security/_authenticate", user=user, password=SCENARIO_VARS[variable])
        assert status == 200, user
    status, policy = lab.es("_ilm/policy/inkdeploy-logs")
    assert status == 200 and list(policy["inkdeploy-logs"]["policy"]["phases"]) == ["hot", "delete"]
    status, template = lab.es("_index_template/inkdeploy-logs")
    assert status == 200, template


def test_logstash_kibana_and_filebeat_run(lab):
    lab.require("log1", "logstash")
    lab.require("log1", "kibana")
    lab.require("web1", "filebeat")
    log1 = lab.hosts["log1"]
    assert log1.service("logstash").is_running
    assert log1.socket(f"tcp://{lab.address['log1']}:5044").is_listening
    assert log1.service("kibana").is_running
    for host in lab.hosts.values():
        assert host.service("filebeat").is_running


def _search(lab, index, query, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, answer = lab.es(f"{index}/_search", method="POST", body={"query": query})
        hits = answer.get("hits", {}).get("hits", []) if status == 200 else []
        if hits:
            return hits[0]["_source"]
        time.sleep(3)
    return None


def test_an_access_log_line_on_web1_reaches_elasticsearch_parsed(lab):
    lab.require("log1", "elasticsearch")
    lab.require("log1", "logstash")
    lab.require("web1", "filebeat")
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
            "http_user_agent": "molecule",
            "ssl_protocol": "TLSv1.3",
        }
    )
    web1 = lab.hosts["web1"]
    web1.run("mkdir -p /var/log/nginx")
    web1.run_expect([0], f"echo '{line}' >> /var/log/nginx/inkdeploy-access.log")
    event = _search(lab, "logs-inkdeploy.nginx-default", {"term": {"http.request.id": request_id}})
    assert event, f"request {request_id} did not reach logs-inkdeploy.nginx-default"
    assert event["http"]["response"]["status_code"] == 200
    assert event["http"]["request"]["method"] == "GET"
    assert event["url"]["original"] == "/healthz?probe=1"
    assert event["source"]["ip"] == "10.9.8.7"
    assert event["service"]["version"] == "1.2.3"
    assert event["event"]["duration"] == 12_000_000
    assert event["host"]["name"] == "web1"


def test_a_journal_line_on_web1_reaches_elasticsearch(lab):
    lab.require("log1", "elasticsearch")
    lab.require("log1", "logstash")
    lab.require("web1", "filebeat")
    marker = f"molecule-elk-{uuid.uuid4().hex}"
    lab.hosts["web1"].run_expect([0], f"echo {marker} | systemd-cat -t molecule-elk")
    event = _search(lab, "logs-inkdeploy.journald-default", {"match_phrase": {"message": marker}})
    assert event, f"{marker} did not reach logs-inkdeploy.journald-default"
    assert event["data_stream"]["dataset"] == "inkdeploy.journald"
