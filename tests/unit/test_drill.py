"""Parsing ansible-playbook's recap and the lab inventory for the lab drills."""

from pathlib import Path

from inkdeploy.lab.drill import changed_tasks, inventory_address, inventory_groups, parse_recap

OUTPUT = """
TASK [nginx_lb : Check the configuration] ****
fatal: [lb1]: FAILED! => changed=false

PLAY RECAP *********************************************************************
app1                       : ok=50   changed=0    unreachable=0    failed=0    skipped=25   rescued=0    ignored=0
lb1                        : ok=52   changed=16   unreachable=0    failed=1    skipped=17   rescued=0    ignored=0
worker1                    : ok=3    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""  # noqa: E501


def test_recap_gives_counts_per_host():
    recap = parse_recap(OUTPUT)
    assert recap["app1"]["ok"] == 50 and recap["lb1"]["changed"] == 16
    assert recap["lb1"]["failed"] == 1 and recap["worker1"]["unreachable"] == 1
    assert set(recap) == {"app1", "lb1", "worker1"}


def test_recap_of_output_without_one_is_empty():
    assert parse_recap("ERROR! the playbook could not be found") == {}


def test_only_the_last_recap_counts():
    first = OUTPUT.replace("changed=16", "changed=99")
    assert parse_recap(first + OUTPUT)["lb1"]["changed"] == 16


def test_changed_tasks_name_each_task_and_handler_with_the_hosts_it_changed():
    output = """
TASK [app : Prune old releases] ************************************************
ok: [app2]
changed: [app1] => (item=/srv/inkapp/releases/3.0.0)
changed: [app1] => (item=/srv/inkapp/releases/3.0.1)
changed: [worker1]

TASK [nginx_lb : Render the upstreams] *****************************************
ok: [lb1]

RUNNING HANDLER [nginx_lb : Reload nginx] **************************************
changed: [lb1 -> localhost]
"""
    assert changed_tasks(output) == {
        "app : Prune old releases": {"app1", "worker1"},
        "nginx_lb : Reload nginx": {"lb1"},
    }
    assert changed_tasks(OUTPUT) == {}


def test_inventory_groups_and_addresses(tmp_path: Path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    lb1: {ansible_host: 10.77.9.10}\n"
        "    app1: {ansible_host: 10.77.9.11}\n"
        "  children:\n    lb:\n      hosts: {lb1: null}\n    app:\n      hosts: {app1: null}\n"
        "    empty: {}\n"
    )
    assert inventory_groups(inventory) == {"lb": ["lb1"], "app": ["app1"], "empty": []}
    assert inventory_address(inventory, "app1") == "10.77.9.11"
