"""The grafana, elasticsearch, logstash, kibana and filebeat roles without hosts.

- Dashboards: valid JSON, unique uids, a datasource on every panel, and every metric their
  queries read is one our Prometheus has (PROMETHEUS_METRICS, the list issue 5 fixes).
- Templates, rendered by Ansible itself with each role's defaults for a small fake fleet
  (data/grafana_elk/render.yml): grafana.ini parses, YAML files parse and say what they should,
  the Logstash pipeline has a sound structure (inkdeploy.logstash_config), the Elasticsearch
  API bodies (lifecycle policy, index template, roles) are valid and fit the pipeline's streams.
- The Logstash pipeline reads the fields the Nginx and Gunicorn access logs really write.
- roles/vendor_package as the five roles include it: each maps its own variables and restart
  handler, the apt source files it writes (vendor and local), the messages it fails or skips
  with, built from those variables.
- The Elasticsearch modules' logic is idempotent against an in-memory Elasticsearch; the helper
  scripts refuse what they should.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inkdeploy.logstash_config import parse_logstash_config
from inkdeploy.promql import metric_names

# Renders role templates; importing it also sets up Ansible's plugin loader, which Templar needs.
from . import role_templates

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
DATA = Path(__file__).resolve().parent / "data" / "grafana_elk"
VENV_BIN = Path(sys.executable).parent
DASHBOARD_FILES = sorted((ROLES / "grafana/files/dashboards").glob("*.json"))
PACKAGE_ROLES = ["grafana", "elasticsearch", "logstash", "kibana", "filebeat"]
ELASTIC_ROLES = PACKAGE_ROLES[1:]

# Metric names our Prometheus has (issue 5): what the exporters on Debian 12, Patroni and the app
# export, and the recording rules of roles/prometheus (read from its rules template, below).
# Dashboards may read these and no others.
EXPORTED_METRICS = frozenset(
    {
        "up",
        # app slots (job app; target labels host, slot)
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
        # node exporter
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "node_load1",
        "node_network_receive_bytes_total",
        "node_systemd_unit_state",
        # prometheus-postgres-exporter 0.11 (default queries)
        "pg_up",
        "pg_stat_database_xact_commit",
        "pg_stat_database_numbackends",
        "pg_replication_lag",
        # Patroni /metrics
        "patroni_primary",
        "patroni_replica",
        "patroni_postgres_running",
        "patroni_xlog_replayed_location",
        # redis exporter
        "redis_up",
        "redis_connected_clients",
        "redis_connected_slaves",
        "redis_instance_info",
        "redis_commands_processed_total",
        "redis_memory_used_bytes",
        "redis_key_size",
        # nginx exporter (stub_status)
        "nginx_up",
        "nginx_connections_active",
        "nginx_http_requests_total",
        "nginx_connections_accepted",
        "nginx_connections_handled",
    }
)


def _recording_rules():
    """The names roles/prometheus records (rules/recording.yml.j2 rendered with its defaults)."""
    rules = yaml.safe_load(role_templates.render("prometheus", "rules/recording.yml.j2"))
    return {rule["record"] for group in rules["groups"] for rule in group["rules"]}


PROMETHEUS_METRICS = EXPORTED_METRICS | _recording_rules()


def _yaml(path):
    return yaml.safe_load(Path(path).read_text())


GRAFANA_VARS = _yaml(ROLES / "grafana/vars/main.yml")
LOGSTASH_VARS = _yaml(ROLES / "logstash/vars/main.yml")


# --------------------------------------------------------------------------- dashboards


def load_dashboards():
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def dashboard_queries(dashboard):
    """(where, PromQL) for every panel target and every label_values() variable query."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
        assert match, f"variable {variable['name']}: unexpected query {query!r}"
        queries.append((f"variable {variable['name']!r}", match.group(1)))
    return queries


def test_the_role_ships_the_five_dashboards():
    uids = {d["uid"] for d in load_dashboards().values()}
    assert uids == {
        "inkdeploy-overview",
        "inkdeploy-app",
        "inkdeploy-postgresql",
        "inkdeploy-redis",
        "inkdeploy-nginx",
    }


def test_dashboards_have_unique_uids_titles_and_panel_ids():
    dashboards = load_dashboards()
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for name, dashboard in dashboards.items():
        assert len(dashboard["uid"]) <= 40, name  # Grafana's limit
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids), name
        assert "inkdeploy" in dashboard["tags"], name
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])


def test_every_panel_and_target_uses_the_provisioned_prometheus():
    uid = GRAFANA_VARS["__grafana_prometheus_uid"]
    for name, dashboard in load_dashboards().items():
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, name
        for panel in panels:
            assert panel.get("datasource") == {"type": "prometheus", "uid": uid}, (
                name,
                panel["title"],
            )
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, (name, panel["title"])
                assert target["expr"].strip(), (name, panel["title"])
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] == uid, (name, variable["name"])


def test_dashboards_read_only_metrics_our_prometheus_has():
    used = set()
    for name, dashboard in load_dashboards().items():
        for where, expr in dashboard_queries(dashboard):
            names = metric_names(expr)
            assert names, f"{name} {where}: no metric in {expr!r}"
            unknown = names - PROMETHEUS_METRICS
            assert not unknown, (
                f"{name} {where} reads {sorted(unknown)}, which Prometheus does not have"
            )
            used |= names
    # The rollout dashboard watches every per-version and per-slot recording rule.
    rules = {m for m in PROMETHEUS_METRICS if m.startswith(("version:", "host_slot:"))}
    assert rules <= used


def test_dashboards_show_the_deploy_annotations():
    for name, dashboard in load_dashboards().items():
        tagged = [
            a for a in dashboard["annotations"]["list"] if a.get("target", {}).get("type") == "tags"
        ]
        assert [a["target"]["tags"] for a in tagged] == [["inkdeploy"]], name


# --------------------------------------------------------------------------- rendered templates


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """{(host, role): {template path without .j2: text}}, rendered by ansible-playbook."""
    out = tmp_path_factory.mktemp("grafana_elk_render")
    ca = _make_ca(out)
    result = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(DATA / "inventory.yml"),
            "-e",
            f"@{DATA / 'extra_vars.yml'}",
            "-e",
            f"repo={REPO}",
            "-e",
            f"out={out}",
            "-e",
            f"ca_file={ca}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(DATA / "render.yml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    documents = {}
    for path in out.glob("*.json"):
        host, role = path.name.split(".")[:2]
        documents[(host, role)] = json.loads(path.read_text())
    documents[("controller", "ca")] = {"ca.crt": ca.read_text()}
    return documents


def _make_ca(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit test CA")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_every_template_of_every_role_renders(rendered):
    for role in PACKAGE_ROLES:
        templates = {
            str(p.relative_to(ROLES / role / "templates"))[: -len(".j2")]
            for p in (ROLES / role / "templates").rglob("*.j2")
        }
        hosts = {host for host, r in rendered if r == role}
        assert hosts, role
        for host in hosts:
            assert templates <= set(rendered[(host, role)]), (role, host)


def test_grafana_ini_parses_and_is_locked_down(rendered):
    text = rendered[("mon1", "grafana")]["etc/grafana/grafana.ini"]
    ini = configparser.RawConfigParser(strict=True, interpolation=None)
    ini.read_string(text)
    expected = {
        "server": {
            "http_addr": "10.0.0.11",
            "http_port": "3000",
            "root_url": "https://10.0.0.11:3000/",
            # https by default, with the certificate the role's internal CA signs
            "protocol": "https",
            "cert_file": "/etc/grafana/tls/grafana.crt",
            "cert_key": "/etc/grafana/tls/grafana.key",
        },
        "paths": {"provisioning": "/etc/grafana/provisioning"},
        "auth.anonymous": {"enabled": "false"},
        "users": {"allow_sign_up": "false", "allow_org_create": "false"},
        "snapshots": {"external_enabled": "false"},
        "analytics": {"reporting_enabled": "false"},
        "security": {
            "disable_gravatar": "true",
            "cookie_secure": "true",
            "strict_transport_security": "true",
            # Grafana's ini parser cuts values at # and ; unless they are in triple quotes.
            "admin_password": '"""unit-test-admin#password;"""',
            "secret_key": '"""unit-test-secret-key-0123"""',
        },
    }
    found = {
        section: {key: ini.get(section, key) for key in keys} for section, keys in expected.items()
    }
    assert found == expected


def test_grafana_datasources(rendered):
    text = rendered[("mon1", "grafana")]["etc/grafana/provisioning/datasources/inkdeploy.yaml"]
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == 1
    assert doc["prune"] is True
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    prometheus = by_uid[GRAFANA_VARS["__grafana_prometheus_uid"]]
    assert prometheus["url"] == "http://10.0.0.11:9090"
    assert prometheus["isDefault"] is True
    elasticsearch = by_uid[GRAFANA_VARS["__grafana_elasticsearch_uid"]]
    assert elasticsearch["url"] == "https://10.0.0.21:9200"
    assert elasticsearch["jsonData"]["index"] == "logs-inkdeploy.*"
    assert elasticsearch["jsonData"]["tlsAuthWithCACert"] is True
    assert elasticsearch["secureJsonData"]["tlsCACert"].strip() == (
        rendered[("controller", "ca")]["ca.crt"].strip()
    )
    # Grafana expands $NAME in provisioning files: a literal $ must be written $$.
    assert elasticsearch["secureJsonData"]["basicAuthPassword"] == "unit-test-grafana-reader$$x"


def test_grafana_dashboard_provider_reads_the_directory_the_role_fills(rendered):
    text = rendered[("mon1", "grafana")]["etc/grafana/provisioning/dashboards/inkdeploy.yaml"]
    (provider,) = yaml.safe_load(text)["providers"]
    assert provider["options"]["path"] == GRAFANA_VARS["__grafana_dashboards_dir"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False


def test_elasticsearch_single_node(rendered):
    config = yaml.safe_load(
        rendered[("log1", "elasticsearch")]["etc/elasticsearch/elasticsearch.yml"]
    )
    assert config["discovery.type"] == "single-node"
    assert "discovery.seed_hosts" not in config
    assert "cluster.initial_master_nodes" not in config
    assert config["network.host"] == "10.0.0.21"
    assert config["xpack.security.enabled"] is True
    assert config["xpack.security.enrollment.enabled"] is False
    for layer in ("http", "transport"):
        assert config[f"xpack.security.{layer}.ssl.enabled"] is True
        assert (
            config[f"xpack.security.{layer}.ssl.key"] == "/etc/elasticsearch/inkdeploy-tls/node.key"
        )
    assert config["xpack.security.transport.ssl.verification_mode"] == "full"
    heap = rendered[("log1", "elasticsearch")][
        "etc/elasticsearch/jvm.options.d/inkdeploy-heap.options"
    ]
    assert [line for line in heap.splitlines() if line.startswith("-X")] == ["-Xms2g", "-Xmx2g"]


def test_elasticsearch_cluster(rendered):
    configs = {
        host: yaml.safe_load(
            rendered[(host, "elasticsearch")]["etc/elasticsearch/elasticsearch.yml"]
        )
        for host in ("es1", "es2", "es3")
    }
    for config in configs.values():
        assert "discovery.type" not in config
        assert config["discovery.seed_hosts"] == ["10.0.1.1:9300", "10.0.1.2:9300", "10.0.1.3:9300"]
        # es3 is data-only: it does not vote in the first election.
        assert config["cluster.initial_master_nodes"] == ["es1", "es2"]
    assert configs["es3"]["node.roles"] == ["data"]
    assert "node.roles" not in configs["es1"]
    template = json.loads(rendered[("es1", "elasticsearch")]["api/index_template.json"])
    assert template["template"]["settings"]["index"]["number_of_replicas"] == "1"
    single = json.loads(rendered[("log1", "elasticsearch")]["api/index_template.json"])
    assert single["template"]["settings"]["index"]["number_of_replicas"] == "0"


def test_ilm_policy_and_index_template_fit_the_pipeline(rendered):
    api = rendered[("log1", "elasticsearch")]
    policy = json.loads(api["api/ilm_policy.json"])["policy"]
    assert list(policy["phases"]) == ["hot", "delete"]
    assert policy["phases"]["hot"]["actions"]["rollover"] == {
        "max_age": "1d",
        "max_primary_shard_size": "50gb",
    }
    assert policy["phases"]["delete"] == {"min_age": "30d", "actions": {"delete": {}}}

    template = json.loads(api["api/index_template.json"])
    assert template["data_stream"] == {}
    assert template["priority"] > 100  # above Elasticsearch's built-in logs-*-* template
    assert template["template"]["settings"]["index"]["lifecycle"]["name"] == "inkdeploy-logs"
    (pattern,) = template["index_patterns"]
    roles = json.loads(api["api/roles.json"])
    writer = roles["inkdeploy_logs_writer"]["indices"][0]
    reader = roles["inkdeploy_logs_reader"]["indices"][0]
    assert {"create_doc", "auto_configure"} <= set(writer["privileges"])
    assert "read" in reader["privileges"] and "write" not in reader["privileges"]
    # Every data stream Logstash writes gets the template, the policy and the writer's rights.
    for dataset in LOGSTASH_VARS["__logstash_datasets"]:
        stream = f"logs-inkdeploy.{dataset}-default"
        assert fnmatch.fnmatchcase(stream, pattern), stream
        assert any(fnmatch.fnmatchcase(stream, n) for n in writer["names"]), stream
        assert any(fnmatch.fnmatchcase(stream, n) for n in reader["names"]), stream
    assert json.loads(api["api/users.json"]) == [
        "kibana_system",
        "logstash_writer",
        "grafana_reader",
    ]


def test_kibana_config(rendered):
    config = yaml.safe_load(rendered[("log1", "kibana")]["etc/kibana/kibana.yml"])
    assert config["server.host"] == "10.0.0.21"
    assert config["server.publicBaseUrl"] == "https://10.0.0.21:5601"
    assert config["server.ssl.enabled"] is True
    assert config["elasticsearch.hosts"] == ["https://10.0.0.21:9200"]
    assert config["elasticsearch.username"] == "kibana_system"
    assert config["elasticsearch.password"] == "unit-test-kibana-system"
    assert config["elasticsearch.ssl.verificationMode"] == "full"
    keys = [
        config["xpack.security.encryptionKey"],
        config["xpack.encryptedSavedObjects.encryptionKey"],
        config["xpack.reporting.encryptionKey"],
    ]
    assert len(set(keys)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in keys)


@pytest.mark.parametrize(
    ("host", "inputs"),
    [
        ("lb1", ["inkdeploy-nginx-access", "inkdeploy-journald"]),
        ("app1", ["inkdeploy-gunicorn-inkapp", "inkdeploy-journald"]),
        ("log1", ["inkdeploy-journald"]),
        ("mon1", ["inkdeploy-journald"]),
        ("db1", ["inkdeploy-journald"]),
    ],
)
def test_filebeat_inputs_follow_the_host_groups(rendered, host, inputs):
    config = yaml.safe_load(rendered[(host, "filebeat")]["etc/filebeat/filebeat.yml"])
    assert [i["id"] for i in config["filebeat.inputs"]] == inputs
    by_id = {i["id"]: i for i in config["filebeat.inputs"]}
    if "inkdeploy-nginx-access" in by_id:
        assert by_id["inkdeploy-nginx-access"]["paths"] == ["/var/log/nginx/inkdeploy-access.log"]
        assert by_id["inkdeploy-nginx-access"]["fields"] == {"inkdeploy_log": "nginx_access"}
    if "inkdeploy-gunicorn-inkapp" in by_id:
        assert by_id["inkdeploy-gunicorn-inkapp"]["paths"] == ["/var/log/inkapp/access-*.json"]
        assert by_id["inkdeploy-gunicorn-inkapp"]["fields"]["inkdeploy_log"] == "gunicorn_access"
    assert by_id["inkdeploy-journald"]["type"] == "journald"
    output = config["output.logstash"]
    assert output["hosts"] == ["10.0.0.21:5044"]
    assert output["ssl.verification_mode"] == "full"
    assert output["ssl.certificate"] == "/etc/filebeat/inkdeploy-tls/filebeat.crt"
    assert config["setup.ilm.enabled"] is False


# --------------------------------------------------------------------------- the Logstash pipeline


def pipeline_text(rendered):
    return rendered[("log1", "logstash")]["etc/logstash/conf.d/inkdeploy/pipeline.conf"]


def test_the_logstash_pipeline_is_well_formed(rendered):
    sections = parse_logstash_config(pipeline_text(rendered))
    assert sections["input"] == ["beats"]
    assert sections["output"] == ["elasticsearch"]
    # Plugins that ship with Logstash 8 (no plugin install needed).
    assert set(sections["filter"]) <= {"json", "date", "mutate", "dissect", "ruby", "grok"}


def test_the_logstash_pipeline_settings(rendered):
    text = pipeline_text(rendered)
    assert 'ssl_client_authentication => "required"' in text
    assert 'hosts => ["https://10.0.0.21:9200"]' in text
    assert 'ssl_verification_mode => "full"' in text
    assert 'password => "${INKDEPLOY_ES_PASSWORD}"' in text
    assert "unit-test-logstash-writer" not in text  # the secret stays in the environment file
    datasets = set(re.findall(r'"\[data_stream\]\[dataset\]" => "inkdeploy\.([a-z_]+)"', text))
    assert datasets == set(LOGSTASH_VARS["__logstash_datasets"])
    env = rendered[("log1", "logstash")]["etc/logstash/inkdeploy.env"]
    assert "INKDEPLOY_ES_PASSWORD='unit-test-logstash-writer'" in env.splitlines()
    pipelines = yaml.safe_load(rendered[("log1", "logstash")]["etc/logstash/pipelines.yml"])
    assert pipelines == [
        {"pipeline.id": "inkdeploy", "path.config": "/etc/logstash/conf.d/inkdeploy/*.conf"}
    ]


def _nginx_log_fields():
    conf = (ROLES / "nginx_lb/templates/etc/nginx/nginx.conf.j2").read_text()
    block = conf[conf.index("log_format inkdeploy_json") : conf.index("access_log")]
    return set(re.findall(r'\\?"(\w+)\\?":', block.replace("'", "")))


def _gunicorn_log_fields():
    from inkdeploy.build import runtime

    return set(re.findall(r'^\s+"(\w+)":', runtime._GUNICORN_LOGGING, re.MULTILINE))


def test_the_pipeline_reads_fields_the_access_logs_write(rendered):
    text = pipeline_text(rendered)
    nginx_used = set(re.findall(r"\[@metadata\]\[nginx\]\[(\w+)\]", text))
    gunicorn_used = set(re.findall(r"\[@metadata\]\[gunicorn\]\[(\w+)\]", text))
    nginx_written = _nginx_log_fields()
    gunicorn_written = _gunicorn_log_fields()
    assert "request_time" in nginx_written and "duration_ms" in gunicorn_written  # parsers work
    assert nginx_used and nginx_used <= nginx_written, nginx_used - nginx_written
    assert gunicorn_used and gunicorn_used <= gunicorn_written, gunicorn_used - gunicorn_written


def test_the_pipeline_recognises_the_celery_and_postgresql_logs(rendered):
    text = pipeline_text(rendered)
    celery = re.search(r"\[systemd\]\[unit\] =~ /(.+?)/ \{", text).group(1)
    celery_vars = _yaml(ROLES / "celery/vars/main.yml")
    worker = (
        celery_vars["__celery_worker_unit"]
        .replace("{{ app_name }}", "inkapp")
        .replace("@", "@celery")
    )
    beat = celery_vars["__celery_beat_unit"].replace("{{ app_name }}", "inkapp")
    assert re.search(celery, worker) and re.search(celery, beat)
    assert not re.search(celery, "inkapp@blue.service")
    # The grok pattern follows roles/postgresql's log_line_prefix; a change there must change it.
    prefix = _yaml(ROLES / "postgresql/vars/main.yml")["__postgresql_local_parameters"][
        "log_line_prefix"
    ]
    assert prefix == "%m [%p] %q%u@%d "
    assert f"log_line_prefix '{prefix}'" in text


# --------------------------------------------------------------------------- roles/vendor_package

VENDOR_PACKAGE = ROLES / "vendor_package"
VENDOR_PACKAGE_SPECS = _yaml(VENDOR_PACKAGE / "meta/argument_specs.yml")["argument_specs"]["main"]
EXTRA_VARS = _yaml(DATA / "extra_vars.yml")
# vendor_package's own variable -> the caller's (CALLER_...), where the names differ.
CALLER_NAMES = {"source": "package_source", "unavailable": "package_unavailable"}
# What the role's tasks register, for "the source answers and offers nothing".
NOTHING_OFFERED = {
    "__vendor_package_key_fetched": True,
    "__vendor_package_staged": {"changed": False},
    "__vendor_package_apt_update": {"rc": 0},
    "__vendor_package_madison": {"stdout_lines": []},
}


def _trusted(value):
    """VALUE with its strings marked as templates, as Ansible marks what it loads from a role."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def _vendor_package_include(role):
    """The include_role task of ROLE's tasks/main.yml that runs vendor_package."""
    (task,) = [
        task
        for task in _yaml(ROLES / role / "tasks/main.yml")
        if task.get("ansible.builtin.include_role", {}).get("name") == "vendor_package"
    ]
    return task


class VendorPackage:
    """What roles/vendor_package sees when ROLE includes it on HOST: ROLE's defaults with the
    render's extra vars, vendor_package's defaults and vars, the include's vars, then FACTS
    (inventory overrides, and the results the role's tasks register), templated by Ansible."""

    def __init__(self, role, host="host1", **facts):
        variables = {
            "ansible_managed": "Ansible managed",
            "inventory_hostname": host,
            "ansible_check_mode": False,
        }
        for layer in (
            _yaml(ROLES / role / "defaults/main.yml"),
            EXTRA_VARS,
            _yaml(VENDOR_PACKAGE / "defaults/main.yml"),
            _yaml(VENDOR_PACKAGE / "vars/main.yml"),
            _vendor_package_include(role)["vars"],
            facts,
        ):
            variables.update(_trusted(layer))
        self.templar = Templar(loader=DataLoader(), variables=variables)

    def __getitem__(self, name):
        return self.templar.template(trust_as_template("{{ " + name + " }}"))

    def render(self, template):
        source = (VENDOR_PACKAGE / "templates" / template).read_text()
        return str(self.templar.template(trust_as_template(source)))


@pytest.mark.parametrize("role", PACKAGE_ROLES)
def test_each_role_includes_vendor_package_with_its_own_variables(role):
    include = _vendor_package_include(role)
    given = include["vars"]
    options = VENDOR_PACKAGE_SPECS["options"]
    assert set(given) <= set(options), set(given) - set(options)
    required = {name for name, spec in options.items() if spec.get("required")}
    assert required == {"vendor_package_name", "vendor_package_caller"}
    assert required <= set(given)
    assert given["vendor_package_name"] == role
    assert given["vendor_package_caller"] == role
    defaults = _yaml(ROLES / role / "defaults/main.yml")
    mapped = set()
    for name, value in given.items():
        match = re.fullmatch(r"\{\{ (\w+) \}\}", str(value))
        if match:
            suffix = name.removeprefix("vendor_package_")
            assert match.group(1) == f"{role}_{CALLER_NAMES.get(suffix, suffix)}", name
            assert match.group(1) in defaults, name
            mapped.add(match.group(1))
    # Every public package variable of the role reaches vendor_package, and the messages' names
    # for them (CALLER_package_source, ...) are the role's real variables.
    package_vars = {
        f"{role}_{suffix}"
        for suffix in (
            "package_source",
            "local_repo_url",
            "local_repo_bypass_proxy",
            "package_unavailable",
            "version",
            "vendor_repo_url",
            "vendor_repo_suite",
            "vendor_repo_components",
            "vendor_key_url",
            "vendor_key_fingerprints",
        )
    }
    assert mapped == package_vars
    # The copies the role had before are gone.
    assert not (ROLES / role / "tasks/package.yml").exists()
    assert not (ROLES / role / "templates/etc/apt").exists()


@pytest.mark.parametrize("role", PACKAGE_ROLES)
def test_the_install_notifies_the_including_roles_restart_handler(role):
    notify = _vendor_package_include(role)["vars"]["vendor_package_notify"]
    assert notify == [f"restart {role}"]
    handlers = _yaml(ROLES / role / "handlers/main.yml")
    topics = {h["name"] for h in handlers} | {h.get("listen") for h in handlers}
    assert set(notify) <= topics
    # The one task of vendor_package that notifies is the package's install.
    (install,) = [task for task in _yaml(VENDOR_PACKAGE / "tasks/main.yml") if "notify" in task]
    assert install["ansible.builtin.apt"]["name"] == "{{ __vendor_package_spec }}"
    assert install["notify"] == "{{ vendor_package_notify }}"


def test_the_package_switch_has_the_same_choices_everywhere():
    options = VENDOR_PACKAGE_SPECS["options"]
    for role in PACKAGE_ROLES:
        specs = _yaml(ROLES / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
        for mine, theirs in [("source", "package_source"), ("unavailable", "package_unavailable")]:
            assert (
                specs[f"{role}_{theirs}"]["choices"] == options[f"vendor_package_{mine}"]["choices"]
            )


def _deb822(text):
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


SOURCES = "etc/apt/sources.list.d/inkdeploy.sources.j2"
PROXY = "etc/apt/apt.conf.d/80inkdeploy-local.j2"


def test_vendor_sources():
    grafana = VendorPackage("grafana")
    assert _deb822(grafana.render(SOURCES)) == {
        "Types": "deb",
        "URIs": "https://apt.grafana.com",
        "Suites": "stable",
        "Components": "main",
        "Signed-By": "/etc/apt/keyrings/inkdeploy-grafana.asc",
    }
    assert (
        grafana["__vendor_package_source_file"]
        == "/etc/apt/sources.list.d/inkdeploy-grafana.sources"
    )
    # The four Elastic packages share one source and one key: the same file from each role.
    elastic = {VendorPackage(role).render(SOURCES) for role in ELASTIC_ROLES}
    assert len(elastic) == 1
    fields = _deb822(elastic.pop())
    assert fields["URIs"] == "https://artifacts.elastic.co/packages/8.x/apt"
    assert fields["Signed-By"] == "/etc/apt/keyrings/inkdeploy-elastic.asc"
    assert {VendorPackage(role)["__vendor_package_source_file"] for role in ELASTIC_ROLES} == {
        "/etc/apt/sources.list.d/inkdeploy-elastic.sources"
    }
    # The pinned Elastic key, normalised as the fingerprint check compares it.
    assert VendorPackage("filebeat")["__vendor_package_key_fingerprints"] == [
        "46095ACC8548582C1A2699A9D27D666CD88E42B4"
    ]


def test_local_sources_are_one_file_whichever_role_writes_it():
    sources, files, proxies = set(), set(), set()
    for role in PACKAGE_ROLES:
        local = VendorPackage(role, **{f"{role}_package_source": "local"})
        sources.add(local.render(SOURCES))
        files.add(
            (local["__vendor_package_source_file"], local["__vendor_package_local_proxy_file"])
        )
        proxies.add(local.render(PROXY))
    assert len(sources) == len(files) == len(proxies) == 1
    assert _deb822(sources.pop()) == {
        "Types": "deb",
        "URIs": "http://10.0.0.1:8700/",
        "Suites": "./",
        "Trusted": "yes",
    }
    ((source_file, proxy_file),) = files
    assert re.fullmatch(
        r"/etc/apt/sources\.list\.d/inkdeploy-local-[0-9a-f]{10}\.sources", source_file
    )
    assert proxy_file == "/etc/apt/apt.conf.d/80inkdeploy-local-" + source_file[-18:-8]
    assert 'Acquire::http::Proxy::10.0.0.1 "DIRECT";' in proxies.pop().splitlines()


def test_the_skip_message_names_the_role_the_source_and_the_fix():
    grafana = VendorPackage(
        "grafana", host="mon1", grafana_package_source="local", **NOTHING_OFFERED
    )
    # As docs/observability-grafana-elk.md quotes it.
    assert grafana["__vendor_package_skip_message"] == (
        'SKIPPED grafana on mon1: package source "local" has no usable grafana package: no grafana'
        " package in the local repository http://10.0.0.1:8700/. The configuration files are"
        " rendered; nothing was installed or started. Put the grafana .deb file into the directory"
        " served at http://10.0.0.1:8700/ and index it (docs/observability-grafana-elk.md), or set"
        " grafana_package_source to vendor."
    )
    kibana = VendorPackage("kibana", host="log1", kibana_package_source="none", **NOTHING_OFFERED)
    assert kibana["__vendor_package_skip_message"].startswith(
        'SKIPPED kibana on log1: package source "none" has no usable kibana package: no kibana'
        " package in the host's own apt sources."
    )
    assert kibana["__vendor_package_skip_message"].endswith(
        "Add an apt source that carries kibana, or set kibana_package_source to vendor or local."
    )


def test_check_mode_on_a_fresh_host_says_it_cannot_tell():
    pending = VendorPackage(
        "filebeat",
        host="web1",
        filebeat_package_source="local",
        ansible_check_mode=True,
        **{**NOTHING_OFFERED, "__vendor_package_staged": {"changed": True}},
    )
    assert pending["__vendor_package_problem"] == "check mode: the source is not configured yet"
    assert pending["__vendor_package_skip_message"] == (
        'CHECK MODE, filebeat on web1: package source "local" is not configured on the host yet,'
        " so check mode cannot tell whether it offers filebeat and stops here for this host. A real"
        " run adds the source, then installs filebeat or says why it cannot."
    )


@pytest.mark.parametrize(
    ("facts", "problem"),
    [
        (
            {
                "__vendor_package_key_fetched": False,
                "__vendor_package_key_fetch": {"msg": "timed out"},
            },
            "cannot download the signing key https://apt.grafana.com/gpg-full.key: timed out",
        ),
        (
            {
                "__vendor_package_apt_update": {
                    "rc": 100,
                    "stderr_lines": [
                        "W: x",
                        "E: Failed to fetch https://apt.grafana.com/InRelease.",
                    ],
                }
            },
            "apt cannot read the Grafana Labs repository https://apt.grafana.com:"
            " E: Failed to fetch https://apt.grafana.com/InRelease",
        ),
        (
            {
                "grafana_version": "11.3.1",
                "__vendor_package_madison": {
                    "stdout_lines": [
                        "   grafana | 11.4.0 | https://apt.grafana.com stable/main amd64 Packages",
                        "   grafana | 11.3.1 | http://mirror.example stable/main amd64 Packages",
                    ]
                },
            },
            "no grafana 11.3.1 in the Grafana Labs repository https://apt.grafana.com"
            " (it offers 11.4.0)",
        ),
        (
            {
                "grafana_version": "11.4.0",
                "__vendor_package_madison": {
                    "stdout_lines": [
                        "   grafana | 11.4.0 | https://apt.grafana.com stable/main amd64 Packages"
                    ]
                },
            },
            "",
        ),
    ],
    ids=["key download", "apt cannot read", "version not offered", "offered"],
)
def test_the_failure_says_why_and_names_the_roles_variables(facts, problem):
    grafana = VendorPackage("grafana", host="mon1", **{**NOTHING_OFFERED, **facts})
    assert grafana["__vendor_package_problem"] == problem
    if problem:
        assert grafana["__vendor_package_fail_message"] == (
            f"grafana cannot be installed on mon1 (grafana_package_source=vendor): {problem}."
            " Let the host reach https://apt.grafana.com, or set grafana_package_source to local"
            " (a directory of .deb files, see docs/observability-grafana-elk.md) or none (a mirror"
            " that carries grafana). To render the configuration and end without installing"
            " instead, set grafana_package_unavailable: skip."
        )


@pytest.mark.parametrize(
    ("installed", "version", "needed"),
    [
        ("", "", True),
        ("8.15.0", "", False),
        ("8.15.0", "8.15.0", False),
        ("8.15.0", "8.16.1", True),
    ],
)
def test_an_install_is_needed_only_when_missing_or_another_version(installed, version, needed):
    role = VendorPackage(
        "elasticsearch",
        __vendor_package_installed_version=installed,
        elasticsearch_version=version,
    )
    assert role["__vendor_package_install_needed"] is needed
    assert role["__vendor_package_spec"] == "elasticsearch" + (f"={version}" if version else "")


def test_the_certificate_entry_point_documents_its_inputs():
    specs = _yaml(ROLES / "elasticsearch/meta/argument_specs.yml")["argument_specs"]["certificate"]
    used = set(
        re.findall(
            r"\b(elasticsearch_certificate_\w+)",
            (ROLES / "elasticsearch/tasks/certificate.yml").read_text(),
        )
    )
    used |= set(
        re.findall(
            r"\b(elasticsearch_certificate_\w+)",
            (ROLES / "elasticsearch/vars/main.yml").read_text(),
        )
    )
    outputs = {"elasticsearch_certificate_files", "elasticsearch_certificate_ready"}
    assert set(specs["options"]) == used - outputs
    for role, entry in [
        ("logstash", "tasks/tls.yml"),
        ("kibana", "tasks/tls.yml"),
        ("filebeat", "tasks/main.yml"),
    ]:
        text = (ROLES / role / entry).read_text()
        assert "tasks_from: certificate" in text
        for option in specs["options"]:
            assert f"{option}:" in text, (role, option)


# --------------------------------------------------------------------------- Elasticsearch modules

sys.path.insert(0, str(ROLES / "elasticsearch/module_utils"))
import inkdeploy_elasticsearch as es  # noqa: E402


class FakeElasticsearch:
    """The few endpoints the modules use, answering the way Elasticsearch does: GET adds defaults
    and metadata, index settings come back as strings, passwords are never returned."""

    def __init__(self):
        self.objects = {}
        self.users = {"elastic": {"password": "admin", "roles": ["superuser"], "enabled": True}}
        self.writes = []

    def request(self, method, path, body=None, auth=None):
        if method != "GET":
            self.writes.append((method, path))
        if path == "_security/_authenticate":
            user, password = auth
            known = self.users.get(user, {}).get("password")
            return (200, {"username": user}) if known == password else (401, {})
        if path.startswith("_security/user/"):
            return self._user(method, path.removeprefix("_security/user/"), body)
        if method == "GET":
            return (
                (200, json.loads(json.dumps(self.objects[path])))
                if path in self.objects
                else (404, {})
            )
        self.objects[path] = self._stored(path, body)
        return 200, {"acknowledged": True}

    def _user(self, method, rest, body):
        name, _, action = rest.partition("/")
        if action == "_password":
            self.users[name]["password"] = body["password"]
            return 200, {}
        if action == "_enable":
            self.users[name]["enabled"] = True
            return 200, {}
        if method == "GET":
            if name not in self.users:
                return 404, {}
            user = {k: v for k, v in self.users[name].items() if k != "password"}
            return 200, {name: {"username": name, "metadata": {}, **user}}
        self.users[name] = {"enabled": True, **self.users.get(name, {}), **body}
        return 200, {"created": True}

    @staticmethod
    def _stored(path, body):
        body = json.loads(json.dumps(body))
        if path.startswith("_ilm/policy/"):
            name = path.rsplit("/", 1)[1]
            for phase in body["policy"]["phases"].values():
                if "delete" in phase.get("actions", {}):
                    phase["actions"]["delete"].setdefault("delete_searchable_snapshot", True)
            return {name: {"version": 1, "modified_date": "2026-01-01", "policy": body["policy"]}}
        if path.startswith("_index_template/"):
            name = path.rsplit("/", 1)[1]
            body["data_stream"] = {"hidden": False, "allow_custom_routing": False}
            return {"index_templates": [{"name": name, "index_template": body}]}
        name = path.rsplit("/", 1)[1]
        return {
            name: {**body, "run_as": [], "metadata": {}, "transient_metadata": {"enabled": True}}
        }


def test_is_subset():
    assert es.is_subset({"a": {"b": 1}}, {"a": {"b": "1", "c": 2}, "d": 3})
    assert es.is_subset({"x": True}, {"x": "true"})
    assert es.is_subset([{"a": 1}], [{"a": 1, "b": 2}])
    assert not es.is_subset({"a": 1}, {"a": 2})
    assert not es.is_subset({"a": 1}, {})
    assert not es.is_subset([1, 2], [1])
    assert not es.is_subset({"a": {"b": 1}}, {"a": "x"})


def test_ensure_object_puts_once_and_then_leaves_it(rendered):
    policy = json.loads(rendered[("log1", "elasticsearch")]["api/ilm_policy.json"])
    template = json.loads(rendered[("log1", "elasticsearch")]["api/index_template.json"])
    fake = FakeElasticsearch()
    cases = [
        ("_ilm/policy/inkdeploy-logs", policy, ["inkdeploy-logs", "policy"], "policy"),
        (
            "_index_template/inkdeploy-logs",
            template,
            ["index_templates", 0, "index_template"],
            None,
        ),
    ]
    for path, body, keys, compare in cases:
        assert es.ensure_object(fake, path, body, keys, compare)[0] is True
        assert es.ensure_object(fake, path, body, keys, compare)[0] is False, path
    assert len(fake.writes) == 2
    # A changed value is put again; check mode only reports it.
    policy["policy"]["phases"]["delete"]["min_age"] = "7d"
    assert es.ensure_object(fake, cases[0][0], policy, cases[0][2], "policy", check_mode=True)[0]
    assert len(fake.writes) == 2
    assert es.ensure_object(fake, cases[0][0], policy, cases[0][2], "policy")[0]
    assert (
        fake.objects["_ilm/policy/inkdeploy-logs"]["inkdeploy-logs"]["policy"]["phases"]["delete"][
            "min_age"
        ]
        == "7d"
    )


def test_ensure_user():
    fake = FakeElasticsearch()
    fake.users["kibana_system"] = {
        "password": "random",
        "roles": ["kibana_system"],
        "enabled": True,
    }
    args = {"roles": ["inkdeploy_logs_writer"], "full_name": "Logstash"}
    assert es.ensure_user(fake, "logstash_writer", "secret-1", **args) == (True, ["created"])
    assert es.ensure_user(fake, "logstash_writer", "secret-1", **args) == (False, [])
    assert es.ensure_user(fake, "logstash_writer", "secret-2", **args) == (True, ["password"])
    assert fake.users["logstash_writer"]["password"] == "secret-2"  # noqa: S105
    changed = es.ensure_user(
        fake, "logstash_writer", "secret-2", roles=["other"], full_name="Logstash"
    )
    assert changed == (True, ["roles"])
    fake.users["logstash_writer"]["enabled"] = False
    assert es.ensure_user(
        fake, "logstash_writer", "secret-2", roles=["other"], full_name="Logstash"
    ) == (
        True,
        ["enabled"],
    )
    # Reserved users: only the password, through _password.
    assert es.ensure_user(fake, "kibana_system", "vault", reserved=True) == (True, ["password"])
    assert es.ensure_user(fake, "kibana_system", "vault", reserved=True) == (False, [])
    writes = len(fake.writes)
    assert es.ensure_user(fake, "grafana_reader", "x" * 12, roles=["r"], check_mode=True) == (
        True,
        ["created"],
    )
    assert len(fake.writes) == writes


# --------------------------------------------------------------------------- helper scripts


def test_the_elasticsearch_restart_helper_refuses_missing_certificates(tmp_path):
    present = tmp_path / "ca.crt"
    present.write_text("x")
    result = subprocess.run(
        [
            sys.executable,
            str(ROLES / "elasticsearch/files/inkdeploy-elasticsearch-restart"),
            str(present),
            str(tmp_path / "node.key"),
        ],
        capture_output=True,
        text=True,
        env={"ES_URL": "https://127.0.0.1:1", "ES_CA": str(present), "PATH": "/nonexistent"},
        check=False,
    )
    assert result.returncode == 2
    assert f"missing or empty {tmp_path / 'node.key'}" in result.stderr


def test_the_logstash_check_script_is_valid_sh():
    subprocess.run(["sh", "-n", str(ROLES / "logstash/files/inkdeploy-logstash-check")], check=True)
