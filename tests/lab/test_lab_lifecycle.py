"""`lab down` leaves nothing behind, `lab up` copes with leftovers, errors are clear."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inkdeploy.lab.procs import find_nspawn

from .conftest import inkdeploy, ok

pytestmark = pytest.mark.lab
ROOT = Path("/var/lib/inkdeploy/lab")


def leftovers(lab: str) -> list[str]:
    found = []
    if find_nspawn(f"ink-{lab}-"):
        found.append("nspawn processes")
    mounts = Path("/proc/self/mountinfo").read_text()
    if f"{ROOT}/{lab}/" in mounts:
        found.append("mounts")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if f"ink-{lab}" in links:
        found.append("links")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"inkdeploy_lab_{lab}" in tables or f"inkdeploy_loss_{lab}_" in tables:
        found.append("nft tables")
    if (ROOT / lab).exists():
        found.append("state directory")
    if any(Path(f"/sys/fs/cgroup/{h}/inkdeploy/{lab}").exists() for h in ("systemd", "unified")):
        found.append("cgroups")
    procs = subprocess.run(["pgrep", "-af", "apt-cacher-ng"], capture_output=True, text=True)
    if f"{ROOT}/{lab}/" in procs.stdout:
        found.append("apt-cacher-ng")
    delayd = subprocess.run(
        ["pgrep", "-af", "inkdeploy.lab.delayd"], capture_output=True, text=True
    )
    if f"ink-{lab}-" in delayd.stdout:
        found.append("delay helpers")
    return found


def test_down_leaves_nothing_behind_and_is_idempotent():
    lab = "ldown"
    ok("lab", "up", "--topology", "trio", "--subnet", "10.77.42.0/24", lab=lab)
    ok("lab", "slow", "app1", "--loss", "5%", "--delay", "20ms", lab=lab)
    assert leftovers(lab)
    assert "Removed lab(s): ldown" in ok("lab", "down", lab=lab)
    assert leftovers(lab) == []
    assert "Nothing to remove" in ok("lab", "down", lab=lab)


def test_up_recovers_from_an_interrupted_run():
    lab = "linterr"
    ok("lab", "up", "--topology", "trio", "--subnet", "10.77.43.0/24", lab=lab)
    # Lose the state as if the run had died half-way: hosts, mounts and bridge are still there.
    (ROOT / lab / "state.json").unlink()
    try:
        up = json.loads(ok("lab", "up", "--topology", "trio", "--subnet", "10.77.43.0/24",
                           "--json", lab=lab))  # fmt: skip
        assert sorted(up["booted"]) == ["app1", "db1", "lb1"]
        st = json.loads(ok("lab", "status", "--json", lab=lab))
        assert all(h["system"] == "running" for h in st["hosts"])
    finally:
        ok("lab", "down", lab=lab)
    assert leftovers(lab) == []


def test_a_subnet_in_use_is_refused_before_anything_is_made():
    subprocess.run(["ip", "link", "add", "inktestbusy", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.77.44.1/24", "dev", "inktestbusy"], check=True)
        proc = inkdeploy("lab", "up", "--topology", "trio", "--subnet", "10.77.44.0/24",
                         lab="lbusy")  # fmt: skip
        assert proc.returncode == 1
        assert (
            "Subnet 10.77.44.0/24 is already in use (10.77.44.0/24 on inktestbusy)" in proc.stderr
        )
        assert leftovers("lbusy") == []
    finally:
        subprocess.run(["ip", "link", "del", "inktestbusy"], check=False)


def test_a_host_that_does_not_boot_shows_its_console_log(tmp_path):
    broken = tmp_path / "rootfs"
    (broken / "etc").mkdir(parents=True)
    (broken / "etc/os-release").write_text("ID=broken\n")
    env_lab = "lbroken"
    proc = subprocess.run(
        [str(Path(__file__).resolve().parents[2] / ".venv/bin/inkdeploy"), "lab", "up",
         "--lab", env_lab, "--topology", "trio", "--subnet", "10.77.45.0/24"],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "INKDEPLOY_LAB_IMAGE": str(broken)},
    )  # fmt: skip
    try:
        assert proc.returncode == 1
        assert "stopped while booting; its console log ends with:" in proc.stderr
        assert "Traceback" not in proc.stderr
        # The console evidence is nspawn's own complaint about the tree.
        assert "directory" in proc.stderr.lower() or "init" in proc.stderr.lower()
    finally:
        ok("lab", "down", lab=env_lab)
    assert leftovers(env_lab) == []


def test_invalid_topology_is_refused_with_one_sentence(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "name: bad\nhosts:\n  w1: {groups: [celery_beat]}\n  w2: {groups: [celery_beat]}\n"
    )
    proc = inkdeploy("lab", "up", "--topology", str(bad), lab="lbad")
    assert proc.returncode == 1
    assert "celery_beat must be on exactly one host" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers("lbad") == []
