"""The runner that puts the lab test lanes side by side (tests/lanes.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

LANES = Path(__file__).resolve().parents[1] / "lanes.py"


def run(*lanes: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LANES), *lanes], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_lanes_run_side_by_side_and_a_failed_lane_fails_the_run_with_its_status() -> None:
    started = time.monotonic()
    done = run("slow=sleep 2; echo slow-output", "empty=sleep 2; echo collected-nothing; exit 5")
    assert time.monotonic() - started < 4  # side by side, not one after the other
    assert done.returncode == 5  # pytest's "nothing collected" is not turned into a pass
    out = done.stdout
    # each log whole; the failed lane's last, so the tail of a CI log shows the failure
    assert out.index("slow-output") < out.index("collected-nothing")
    assert re.search(r"slow: passed in 0:0[23]\n", out), out
    assert re.search(r"empty: FAILED \(5\) in 0:0[23]\n", out), out


def test_every_lane_passing_is_a_pass() -> None:
    done = run("a=true", "b=echo fine")
    assert done.returncode == 0, done.stdout
    assert "fine" in done.stdout


def test_a_malformed_lane_is_refused_in_one_sentence() -> None:
    done = run("no command here")
    assert done.returncode != 0
    assert "is not NAME=COMMAND" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_interrupts_every_lane_so_it_can_clean_up(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    cleanup = f"trap 'touch {marker}; exit 130' INT; sleep 30 & wait"
    proc = subprocess.Popen([sys.executable, str(LANES), f"a={cleanup}", "b=sleep 30"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(1.5)
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert marker.exists()  # the lane got SIGINT and ran its trap
    assert proc.returncode != 0 and "stopping every lane" in out
