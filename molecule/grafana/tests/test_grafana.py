"""Verify the grafana role on the scenario's lab hosts (pytest-testinfra, ansible backend).

Run by `molecule verify -s grafana`. What can be checked depends on the package source:

- Always: what the role writes before its package install on mon1: grafana.ini (parsed with
  configparser, locked down, bound to mon1's address, https with the certificate the internal
  Grafana CA on the controller signed), the datasources (Prometheus on mon1,
  Elasticsearch on log1 trusting the ELK CA), the dashboard provider and the dashboards (the
  role's files, byte for byte), owners and modes, and the local repository's apt source.
- Where Grafana is installed: its API lists the provisioned datasources and dashboards, anonymous
  access is refused, and the orchestrator's token (saved on the controller) posts a deploy
  annotation. Without the package these tests are skipped with a reason naming the package source.
"""

import base64
import configparser
import datetime
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import testinfra
import yaml
from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
from vendor_repo import VendorRepo, scenario_vars

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((REPO / "roles/grafana/files/dashboards").glob("*.json"))
SCENARIO_VARS = scenario_vars(__file__)


class Lab:
    def __init__(self, inventory):
        from testinfra.utils.ansible_runner import AnsibleRunner

        runner = AnsibleRunner.get_runner(inventory)
        self.mon1 = testinfra.get_host("ansible://mon1", ansible_inventory=inventory)
        self.address = {h: runner.get_variables(h)["ansible_host"] for h in ("mon1", "log1")}
        self.repo = VendorRepo(runner.get_variables("mon1"), SCENARIO_VARS)
        inventory_dir = Path(inventory) if Path(inventory).is_dir() else Path(inventory).parent
        # elasticsearch_pki_dir and grafana_annotations_token_file in molecule.yml
        self.state = inventory_dir.parent
        self.api = f"https://{self.address['mon1']}:3000"
        # grafana_pki_dir's default: {{ inventory_dir }}/pki/grafana
        self.pki = inventory_dir / "pki" / "grafana"

    def require_grafana(self):
        self.repo.require(self.mon1, "mon1", "grafana", "the Grafana .deb file")

    def read(self, path):
        return self.mon1.file(path).content_string

    def call(self, path, method="GET", body=None, token=None, user=None, password=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        request = urllib.request.Request(  # noqa: S310 (https://mon1:3000, from the inventory)
            self.api + path,
            method=method,
            headers=headers,
            data=None if body is None else json.dumps(body).encode(),
        )
        try:
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            with urllib.request.urlopen(request, timeout=15, context=context) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def admin(self, path, **kwargs):
        return self.call(
            path, user="admin", password=SCENARIO_VARS["grafana_admin_password"], **kwargs
        )


@pytest.fixture(scope="session")
def lab(pytestconfig):
    return Lab(pytestconfig.option.ansible_inventory)


def assert_owned(host, path, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == ("root", "grafana", mode), path


# --------------------------------------------------------------------------- the package source


def test_grafana_installed_from_the_package_source(lab):
    """Installed, or reported as skipped with the package source named."""
    lab.require_grafana()
    assert lab.mon1.service("grafana-server").is_enabled


def test_mon1_reads_the_local_repository(lab):
    sources = lab.mon1.run("ls /etc/apt/sources.list.d/").stdout.split()
    local = [s for s in sources if s.startswith("inkdeploy-local-")]
    assert len(local) == 1, sources
    assert f"URIs: {lab.repo.url}" in lab.read(f"/etc/apt/sources.list.d/{local[0]}").splitlines()
    assert "inkdeploy-grafana.sources" not in sources


# ------------------------------------------------------------------------- written before install


def test_grafana_ini(lab):
    path = "/etc/grafana/grafana.ini"
    assert_owned(lab.mon1, path, 0o640)
    ini = configparser.RawConfigParser(strict=True, interpolation=None)
    ini.read_string(lab.read(path))
    assert ini.get("server", "http_addr") == lab.address["mon1"]
    assert ini.get("server", "http_port") == "3000"
    assert ini.get("auth.anonymous", "enabled") == "false"
    assert ini.get("users", "allow_sign_up") == "false"
    assert ini.get("security", "admin_user") == "admin"
    password = SCENARIO_VARS["grafana_admin_password"]
    assert ini.get("security", "admin_password") == f'"""{password}"""'


def test_grafana_serves_https_with_a_certificate_from_the_internal_ca(lab):
    """Written before the package is installed: key, certificate and CA in /etc/grafana/tls
    (the key readable by the grafana group only), grafana.ini pointing at them."""
    ini = configparser.RawConfigParser(strict=True, interpolation=None)
    ini.read_string(lab.read("/etc/grafana/grafana.ini"))
    assert ini.get("server", "protocol") == "https"
    assert ini.get("server", "cert_file") == "/etc/grafana/tls/grafana.crt"
    assert ini.get("server", "cert_key") == "/etc/grafana/tls/grafana.key"
    assert ini.get("server", "root_url") == f"https://{lab.address['mon1']}:3000/"
    assert ini.get("security", "cookie_secure") == "true"
    assert_owned(lab.mon1, "/etc/grafana/tls/grafana.key", 0o640)
    assert_owned(lab.mon1, "/etc/grafana/tls/grafana.crt", 0o644)
    served = lab.read("/etc/grafana/tls/grafana.crt").strip()
    assert served == (lab.pki / "mon1.crt").read_text().strip()
    assert lab.read("/etc/grafana/tls/ca.crt").strip() == (lab.pki / "ca.crt").read_text().strip()
    cert = x509.load_pem_x509_certificate(served.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert lab.address["mon1"] in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=366), lifetime
    assert (lab.pki / "ca.key").stat().st_mode & 0o077 == 0


def test_grafana_answers_https_only(lab):
    lab.require_grafana()
    status, health = lab.call("/api/health")
    assert status == 200 and health["database"] == "ok"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{lab.address['mon1']}:3000/api/health", timeout=5)


def test_datasources(lab):
    path = "/etc/grafana/provisioning/datasources/inkdeploy.yaml"
    assert_owned(lab.mon1, path, 0o640)
    doc = yaml.safe_load(lab.read(path))
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    assert set(by_uid) == {"inkdeploy-prometheus", "inkdeploy-elasticsearch"}
    assert by_uid["inkdeploy-prometheus"]["url"] == f"http://{lab.address['mon1']}:9090"
    elasticsearch = by_uid["inkdeploy-elasticsearch"]
    assert elasticsearch["url"] == f"https://{lab.address['log1']}:9200"
    ca = (lab.state / "pki/elk/ca.crt").read_text()
    assert elasticsearch["secureJsonData"]["tlsCACert"].strip() == ca.strip()
    assert elasticsearch["basicAuthUser"] == "grafana_reader"


def test_dashboards_are_the_roles_files(lab):
    provider = yaml.safe_load(lab.read("/etc/grafana/provisioning/dashboards/inkdeploy.yaml"))
    directory = provider["providers"][0]["options"]["path"]
    listed = sorted(lab.mon1.run(f"ls {directory}").stdout.split())
    assert listed == [p.name for p in DASHBOARDS]
    for dashboard in DASHBOARDS:
        assert_owned(lab.mon1, f"{directory}/{dashboard.name}", 0o640)
        assert json.loads(lab.read(f"{directory}/{dashboard.name}")) == json.loads(
            dashboard.read_text()
        )


# --------------------------------------------------------------------------- Grafana running


def test_the_api_lists_the_provisioned_datasources_and_dashboards(lab):
    lab.require_grafana()
    assert lab.call("/api/health")[0] == 200
    assert lab.call("/api/datasources")[0] == 401  # no anonymous access
    status, datasources = lab.admin("/api/datasources")
    assert status == 200
    assert {d["uid"] for d in datasources} >= {"inkdeploy-prometheus", "inkdeploy-elasticsearch"}
    expected = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    deadline = time.monotonic() + 60
    found = set()
    while time.monotonic() < deadline and found != expected:
        status, results = lab.admin("/api/search?type=dash-db&tag=inkdeploy")
        found = {r["uid"] for r in results or []}
        time.sleep(2)
    assert found == expected


def test_the_orchestrator_token_posts_deploy_annotations(lab):
    lab.require_grafana()
    token_file = lab.state / "pki/grafana/mon1.token"
    assert token_file.stat().st_mode & 0o077 == 0
    token = token_file.read_text().strip()
    now = int(time.time() * 1000)
    status, created = lab.call(
        "/api/annotations",
        method="POST",
        token=token,
        body={"time": now, "tags": ["inkdeploy", "molecule"], "text": "molecule deploy annotation"},
    )
    assert status == 200, created
    status, found = lab.call("/api/annotations?tags=molecule&limit=10", token=token)
    assert status == 200 and created["id"] in [a["id"] for a in found]
    assert lab.call(f"/api/annotations/{created['id']}", method="DELETE", token=token)[0] == 200
