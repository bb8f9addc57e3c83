"""The fact cache of ansible.cfg is kept per inventory: real ansible-playbook runs on localhost."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# Prints what the cache holds for app1, then (with -e probe_set=true) caches this inventory's
# value. Run 1 of an inventory sees the cache before it set anything; later runs only read.
PLAYBOOK = """
- name: Read, then set, a cached fact
  hosts: app1
  gather_facts: false
  tasks:
    - name: Show what the fact cache holds
      ansible.builtin.debug:
        msg: "cached={{ ansible_facts.inkdeploy_probe | default('absent') }}"
    - name: Cache a fact unique to this inventory
      ansible.builtin.set_fact:
        inkdeploy_probe: "{{ probe }}"
        cacheable: true
      when: probe_set | default(false) | bool
"""


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """Two inventories a/hosts.yml and b/hosts.yml, each with a local host named app1."""
    for name in ("a", "b"):
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "probe": f"from-{name}",
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"app1": host}}}))
    (tmp_path / "probe.yml").write_text(PLAYBOOK)
    return tmp_path


def cached_probe(lab: Path, inventory: str, set_it: bool = False, plugin: str = "") -> str:
    """Run the probe playbook against LAB/INVENTORY/hosts.yml; return what it read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_CACHE_PLUGIN")}
    env |= {
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(lab / "facts"),
        "ANSIBLE_NOCOLOR": "1",
    }
    if plugin:
        env["ANSIBLE_CACHE_PLUGIN"] = plugin
    extra = json.dumps({"probe_set": set_it})
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", f"{inventory}/hosts.yml", "-e", extra]
    proc = subprocess.run(
        [*cmd, "probe.yml"], cwd=lab, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = re.search(r"cached=(\S+)", proc.stdout)
    assert seen, proc.stdout
    return seen.group(1)


def test_inventories_with_the_same_host_names_never_see_each_others_facts(lab: Path):
    assert cached_probe(lab, "a", set_it=True) == "absent"
    assert cached_probe(lab, "b", set_it=True) == "absent"
    assert cached_probe(lab, "a") == "from-a"
    assert cached_probe(lab, "b") == "from-b"
    assert sorted(p.name.split("-")[0] for p in (lab / "facts").iterdir()) == [
        "a_hosts.yml", "b_hosts.yml",
    ]  # fmt: skip


def test_builtin_jsonfile_is_what_leaked(lab: Path):
    """The same runs with the builtin plugin: B reads A's fact (why the plugin exists)."""
    assert cached_probe(lab, "a", set_it=True, plugin="ansible.builtin.jsonfile") == "absent"
    assert cached_probe(lab, "b", plugin="ansible.builtin.jsonfile") == "from-a"


def test_cache_directory_names():
    spec = importlib.util.spec_from_file_location(
        "inventory_jsonfile", PROJECT / "plugins/cache/inventory_jsonfile.py"
    )
    assert spec and spec.loader
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    lab = plugin.inventory_dirname(["/srv/inventories/lab/hosts.yml"])
    assert lab.startswith("lab_hosts.yml-") and len(lab) == len("lab_hosts.yml-") + 12
    assert lab == plugin.inventory_dirname(["/srv/inventories/lab/hosts.yml"])
    assert lab != plugin.inventory_dirname(["/srv/inventories/production/hosts.yml"])
    assert plugin.inventory_dirname(["app1,lb1"]).startswith("app1_lb1-")
    assert plugin.inventory_dirname(()) == plugin.inventory_dirname(None) == "default"
