"""Lab integration tests: real hosts booted with systemd-nspawn (root needed).

One lab ("itest", three hosts) is booted once for the session; tests that take hosts down bring
them back. Tests that need a lab of their own use other names and subnets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

LAB = "itest"
SUBNET = "10.77.40.0/24"
REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("inkdeploy"))
# ansible, ansible-inventory and the CLI come from the same virtualenv as pytest.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def inkdeploy(*args: str, lab: str = LAB, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INKDEPLOY_LAB": lab}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def ok(*args: str, lab: str = LAB, timeout: float = 300) -> str:
    proc = inkdeploy(*args, lab=lab, timeout=timeout)
    assert proc.returncode == 0, f"inkdeploy {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def on(
    host: str, *cmd: str, lab: str = LAB, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return inkdeploy("lab", "exec", host, "--", *cmd, lab=lab, timeout=timeout)


def tcp_probe(src: str, dst: str, port: int = 22, timeout: float = 2.0, lab: str = LAB) -> int:
    """errno of a TCP connect from host ``src`` to ``dst`` (0 = connected)."""
    code = (
        f"import socket,sys; s=socket.socket(); s.settimeout({timeout}); "
        f"print(s.connect_ex((sys.argv[1], {port})))"
    )
    proc = on(src, "python3", "-c", code, dst, lab=lab)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


def status(lab: str = LAB) -> dict:
    return json.loads(ok("lab", "status", "--json", lab=lab))


@pytest.fixture(scope="session")
def lab() -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run them as root (CI does)")
    inkdeploy("lab", "down")
    up = json.loads(ok("lab", "up", "--topology", "trio", "--subnet", SUBNET, "--json"))
    yield up
    ok("lab", "down")
