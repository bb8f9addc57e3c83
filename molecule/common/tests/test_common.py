"""Verify the common role on converged lab hosts (pytest-testinfra, ansible backend).

Run, for example:
    py.test --hosts=all --ansible-inventory=INVENTORY --connection=ansible \
        molecule/common/tests/test_common.py

Expected values come from the same places Ansible takes them, in the same order of precedence:
the role defaults, then the inventory (host and group vars), then the vars of converge.yml.
"""

import functools
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEFAULTS = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())
CONVERGE_VARS = yaml.safe_load((Path(__file__).resolve().parents[1] / "converge.yml").read_text())[
    0
].get("vars", {})
REQUIRED_PACKAGES = [
    "python3-apt",
    "openssh-server",
    "sudo",
    "locales",
    "tzdata",
    "systemd-timesyncd",
    "nftables",
]
PORT_RE = re.compile(r"\b(tcp|udp) dport (\d+(?:-\d+)?) accept\b")
# sshd -T prints the old spelling of some values.
SSHD_T_ALIASES = {"prohibit-password": {"prohibit-password", "without-password"}}


def _settings(variables):
    settings = dict(DEFAULTS)
    settings.update({k: v for k, v in variables.items() if k.startswith("common_")})
    settings.update(CONVERGE_VARS)
    settings["group_names"] = variables.get("group_names", [])
    if settings["common_firewall_ssh_sources"] == "{{ common_firewall_admin_sources }}":
        settings["common_firewall_ssh_sources"] = settings["common_firewall_admin_sources"]
    return settings


@functools.cache
def _settings_for(backend_host, inventory):
    from testinfra.utils.ansible_runner import AnsibleRunner

    return _settings(AnsibleRunner.get_runner(inventory).get_variables(backend_host))


def settings(host):
    """Effective common_* settings for this host."""
    return _settings_for(host.backend.host, host.backend.ansible_inventory)


def _port(conf, entry):
    port = str(entry["port"])
    return str(conf["common_ssh_port"]) if "common_ssh_port" in port else port


def _raw_entries(conf):
    raw = []
    for group in conf["group_names"]:
        raw += conf["common_firewall_group_ports"].get(group, [])
    return raw + conf["common_firewall_all_hosts_ports"] + conf["common_firewall_extra_ports"]


def _entries(conf):
    """Port entries this host should admit: (proto, port, sources) tuples, where sources names
    every restriction (CIDRs, source groups, "admin") and is empty only for "from anywhere"."""
    raw = _raw_entries(conf)
    return {
        (
            e.get("proto", "tcp"),
            _port(conf, e),
            tuple(e.get("sources") or ())
            + tuple(e.get("source_groups") or ())
            + (("admin",) if e.get("admin") else ()),
        )
        for e in raw
    }


def _other_group_ports(conf):
    """(proto, port) opened by groups this host is NOT in, and by nothing that applies to it."""
    mine = {(proto, port) for proto, port, _ in _entries(conf)}
    mine.add(("tcp", str(conf["common_ssh_port"])))
    others = set()
    for group, entries in conf["common_firewall_group_ports"].items():
        if group not in conf["group_names"]:
            others |= {(e.get("proto", "tcp"), _port(conf, e)) for e in entries}
    return others - mine


def _input_chain(host):
    return host.check_output("nft list chain inet inkdeploy input")


def _tcp_probe(host, address, ports):
    """Connect from HOST to ADDRESS on each port, in parallel.

    Returns {port: "open" | "refused" | "dropped"}: refused means the packet got through the
    firewall and nothing listens; dropped means no answer within 3 seconds.
    """
    port_list = " ".join(str(p) for p in ports)
    script = (
        f"for p in {port_list}; do"
        f' (timeout 3 bash -c "</dev/tcp/{address}/$p" 2>/dev/null; echo "$p $?") &'
        " done; wait"
    )
    out = host.check_output(script)
    states = {0: "open", 124: "dropped"}
    return {
        port: states.get(int(rc), "refused")
        for port, rc in (line.split() for line in out.splitlines())
    }


# --- apt ----------------------------------------------------------------------------------------


def test_apt_proxy_file_matches_inventory(host):
    proxy = host.ansible.get_variables().get("common_apt_proxy", DEFAULTS["common_apt_proxy"])
    proxy_file = host.file("/etc/apt/apt.conf.d/00inkdeploy-proxy")
    if proxy:
        assert proxy_file.is_file
        assert f'Acquire::http::Proxy "{proxy}";' in proxy_file.content_string
        # apt itself reads it (no other file overrides it).
        assert host.check_output("apt-config shell P Acquire::http::Proxy") == f"P='{proxy}'"
    else:
        assert not proxy_file.exists


def test_base_packages_installed(host):
    conf = settings(host)
    wanted = set(conf["common_packages"] + conf["common_packages_extra"] + REQUIRED_PACKAGES)
    missing = sorted(name for name in wanted if not host.package(name).is_installed)
    assert missing == []


# --- time, locale -------------------------------------------------------------------------------


def test_timesyncd_configured_and_enabled(host):
    conf = settings(host)
    dropin = host.file("/etc/systemd/timesyncd.conf.d/inkdeploy.conf")
    assert f"NTP={' '.join(conf['common_ntp_servers'])}" in dropin.content_string.splitlines()
    service = host.service("systemd-timesyncd")
    assert service.is_enabled
    virt = host.run("systemd-detect-virt --container")
    if virt.rc == 0:
        # Containers use the host clock; timesyncd skips itself and must not be failed.
        result = host.check_output("systemctl show -P ConditionResult systemd-timesyncd")
        assert result == "no"
        assert host.check_output("systemctl is-failed systemd-timesyncd || true") != "failed"
    else:
        assert service.is_running


def test_timezone(host):
    tz = settings(host)["common_timezone"]
    assert host.file("/etc/localtime").linked_to == f"/usr/share/zoneinfo/{tz}"
    assert host.file("/etc/timezone").content_string == f"{tz}\n"
    expected_abbrev = host.check_output(f"TZ={tz} date +%Z")
    assert host.check_output("date +%Z") == expected_abbrev


def test_locale_generated_and_default(host):
    locale = settings(host)["common_locale"]
    name, _, charset = locale.partition(".")
    normalized = f"{name}.{charset.lower().replace('-', '')}"
    assert normalized in host.check_output("locale -a").split()
    assert f"LANG={locale}" in host.file("/etc/default/locale").content_string.splitlines()
    # A login shell picks it up (pam_env reads /etc/default/locale for SSH sessions).
    result = host.run(f"LANG={locale} LC_ALL= locale")
    assert result.rc == 0
    assert "Cannot set" not in result.stderr


# --- admin users --------------------------------------------------------------------------------


def test_admin_users(host):
    conf = settings(host)
    users = conf["common_admin_users"]
    assert users, "converge.yml defines at least one admin user"
    for user in users:
        account = host.user(user["name"])
        if user.get("state", "present") == "absent":
            assert not account.exists
            continue
        assert account.exists
        assert host.file(account.home).is_directory
        keys = host.file(f"{account.home}/.ssh/authorized_keys")
        assert keys.user == user["name"]
        assert keys.mode == 0o600
        lines = [x for x in keys.content_string.splitlines() if x and not x.startswith("#")]
        assert lines == user["ssh_keys"]
        rights = host.check_output(f"sudo -l -U {user['name']}")
        nopasswd = "NOPASSWD: " if conf["common_admin_sudo_nopasswd"] else ""
        if user.get("sudo", True):
            assert f"(ALL : ALL) {nopasswd}ALL" in rights
        else:
            assert "is not allowed to run sudo" in rights


def test_sudoers_dropin_is_valid(host):
    assert host.run("visudo -cf /etc/sudoers.d/inkdeploy-admins").rc == 0
    assert host.file("/etc/sudoers.d/inkdeploy-admins").mode == 0o440


# --- sshd ---------------------------------------------------------------------------------------


def test_sshd_effective_config(host):
    conf = settings(host)
    effective = dict(
        line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line
    )
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitemptypasswords"] == "no"
    assert effective["x11forwarding"] == "no"
    assert effective["pubkeyauthentication"] == "yes"
    root_login = conf["common_sshd_permit_root_login"]
    assert effective["permitrootlogin"] in SSHD_T_ALIASES.get(root_login, {root_login})
    assert effective["maxauthtries"] == str(conf["common_sshd_max_auth_tries"])
    assert effective["clientaliveinterval"] == str(conf["common_sshd_client_alive_interval"])
    assert effective["port"] == str(conf["common_ssh_port"])
    config = host.file("/etc/ssh/sshd_config").content_string
    assert "Include /etc/ssh/sshd_config.d/*.conf" in config.splitlines()
    assert host.service("ssh").is_running
    assert host.service("ssh").is_enabled


def test_password_login_is_refused(host):
    port = settings(host)["common_ssh_port"]
    admins = [u["name"] for u in settings(host)["common_admin_users"] if u.get("state") != "absent"]
    for user in ["root", *admins]:
        # ssh exits 255 on failure, which testinfra takes for a broken connection: report the
        # status on stdout instead.
        result = host.run(
            "ssh -p %s -o BatchMode=yes -o PreferredAuthentications=password,keyboard-interactive"
            " -o PubkeyAuthentication=no -o StrictHostKeyChecking=no"
            " -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 %s@127.0.0.1 true 2>&1;"
            " echo ssh-exit=$?",
            str(port),
            user,
        )
        assert result.stdout.splitlines()[-1] == "ssh-exit=255"
        # The server offers public keys and nothing else.
        assert f"{user}@127.0.0.1: Permission denied (publickey)." in result.stdout


# --- firewall -----------------------------------------------------------------------------------


def test_nftables_service_enabled_and_active(host):
    service = host.service("nftables")
    assert service.is_enabled
    assert service.is_running  # oneshot with RemainAfterExit: active (exited)


def test_nftables_chain_policies(host):
    ruleset = host.check_output("nft list table inet inkdeploy")
    assert "type filter hook input priority filter; policy drop;" in ruleset
    assert "type filter hook forward priority filter; policy drop;" in ruleset
    assert "type filter hook output priority filter; policy accept;" in ruleset
    chain = _input_chain(host)
    assert "ct state established,related accept" in chain
    assert 'iif "lo" accept' in chain


def test_nftables_opens_ssh_and_group_ports(host):
    conf = settings(host)
    chain = _input_chain(host)
    opened = set(PORT_RE.findall(chain))
    assert ("tcp", str(conf["common_ssh_port"])) in opened
    runner = host.backend.ansible_runner

    def admits_someone(entry):
        named = entry.get("source_groups") or []
        anywhere = not named and not entry.get("admin") and not entry.get("sources")
        return (
            anywhere
            or bool(entry.get("sources"))
            or any(runner.get_hosts(g) for g in named)
            or (entry.get("admin") and conf["common_firewall_admin_sources"])
        )

    every = {(e.get("proto", "tcp"), _port(conf, e)): e for e in _raw_entries(conf)}
    wanted = {
        (e.get("proto", "tcp"), _port(conf, e)) for e in _raw_entries(conf) if admits_someone(e)
    }
    closed = set(every) - wanted - {("tcp", str(conf["common_ssh_port"]))}
    assert wanted - opened == set()
    # default deny: a port whose source groups are empty in this inventory opens to nobody
    assert closed & opened == set()
    # and a restricted port admits only addresses, never "any"
    for line in chain.splitlines():
        if "dport 5432" in line or "dport 2379" in line:
            assert "saddr" in line, line


def test_nftables_keeps_other_groups_ports_closed(host):
    conf = settings(host)
    opened = set(PORT_RE.findall(_input_chain(host)))
    closed = _other_group_ports(conf)
    assert closed, "the default group ports include groups this host is not in"
    assert opened & closed == set()
    if "lb" not in conf["group_names"]:
        assert ("tcp", "443") not in opened


def test_firewall_from_another_host(host):
    """From a neighbour, this host's ports get through (open or refused), others' are dropped."""
    runner = host.backend.ansible_runner
    me = host.backend.host
    conf = settings(host)
    others = [name for name in runner.get_hosts("all") if name != me]
    assert others, "this test needs a second lab host to probe from"
    neighbour = runner.get_host(others[0])
    address = host.ansible.get_variables().get("ansible_host", me)
    reachable = {
        port.split("-")[0]
        for proto, port, sources in _entries(conf)
        if proto == "tcp" and not sources
    }
    if not conf["common_firewall_ssh_sources"]:
        reachable.add(str(conf["common_ssh_port"]))
    blocked = {port.split("-")[0] for proto, port in _other_group_ports(conf) if proto == "tcp"}
    result = _tcp_probe(neighbour, address, sorted(reachable | blocked))
    assert {p: s for p, s in result.items() if p in reachable and s == "dropped"} == {}
    assert {p: s for p, s in result.items() if p in blocked and s != "dropped"} == {}
    if not conf["common_firewall_ssh_sources"]:
        assert result[str(conf["common_ssh_port"])] == "open"


# --- journald -----------------------------------------------------------------------------------


def test_journald_limits(host):
    conf = settings(host)
    dropin = host.file("/etc/systemd/journald.conf.d/inkdeploy.conf").content_string.splitlines()
    for key, var in [
        ("Storage", "common_journald_storage"),
        ("SystemMaxUse", "common_journald_system_max_use"),
        ("SystemKeepFree", "common_journald_system_keep_free"),
        ("MaxRetentionSec", "common_journald_max_retention_sec"),
        ("RateLimitIntervalSec", "common_journald_rate_limit_interval_sec"),
        ("RateLimitBurst", "common_journald_rate_limit_burst"),
    ]:
        assert f"{key}={conf[var]}" in dropin
    merged = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "/etc/systemd/journald.conf.d/inkdeploy.conf" in merged
    assert host.service("systemd-journald").is_running
    if conf["common_journald_storage"] == "persistent":
        assert host.file("/var/log/journal").is_directory


@pytest.mark.parametrize(
    "path",
    [
        "/etc/ssh/sshd_config",
        "/etc/nftables.conf",
        "/etc/systemd/journald.conf.d/inkdeploy.conf",
        "/etc/systemd/timesyncd.conf.d/inkdeploy.conf",
        "/etc/default/locale",
        "/etc/sudoers.d/inkdeploy-admins",
    ],
)
def test_managed_files_say_so(host, path):
    assert "Ansible managed" in host.file(path).content_string.splitlines()[1]
