"""Run Molecule scenarios one after another, each timed, and go on after a failed one, so one
CI run names every failing scenario (`make molecule`).

    python tests/molecule_all.py SCENARIO [SCENARIO ...]

After each scenario one line gives the seconds each of its steps took (read from Molecule's
"SCENARIO ➜ STEP: Executing" lines), so a CI log shows where a scenario's time goes.

Exit status 1 if any scenario failed, 0 if all passed. Ctrl-C or SIGTERM (tests/lanes.py sends
SIGINT to the whole process group) ends the loop: the running scenario gets SIGINT, is waited
for, then `molecule destroy` takes its lab down whatever step it was in, and no further scenario
starts; exit status 130. A shell loop cannot do this: Molecule handles SIGINT and exits 1, and
bash then treats the signal as handled by the child, running neither its trap nor stopping.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

MOLECULE = str(Path(sys.executable).with_name("molecule"))
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")
_STEP = re.compile(r"➜ (\S+): Executing\s*$")


def run_timed(proc: subprocess.Popen[bytes]) -> list[tuple[str, float]]:
    """Pass PROC's output through; (step, seconds) for each step Molecule announced."""
    assert proc.stdout is not None
    steps: list[tuple[str, float]] = []
    last: tuple[str, float] | None = None
    for line in proc.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        found = _STEP.search(_ANSI.sub(b"", line).decode(errors="replace"))
        if found:
            now = time.monotonic()
            if last:
                steps.append((last[0], now - last[1]))
            last = (found.group(1), now)
    if last:
        steps.append((last[0], time.monotonic() - last[1]))
    return steps


def step_line(steps: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {seconds:.0f}" for name, seconds in steps)


def main(scenarios: list[str]) -> int:
    interrupted: list[int] = []
    running: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        interrupted.append(signum)
        for proc in running:  # a group-wide SIGINT reached it already; a SIGTERM did not
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    failed: list[str] = []
    for scenario in scenarios:
        if interrupted:
            break
        started = time.monotonic()
        proc = subprocess.Popen(
            [MOLECULE, "test", "-s", scenario], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        running[:] = [proc]
        steps = run_timed(proc)
        rc = proc.wait()
        if interrupted:
            print(f"[molecule] interrupted: taking the lab of {scenario} down", flush=True)
            subprocess.run([MOLECULE, "destroy", "-s", scenario], capture_output=True, check=False)
            return 130
        result = "passed" if rc == 0 else "FAILED"
        if rc != 0:
            failed.append(scenario)
        print(f"[molecule] {scenario}: {result} in {time.monotonic() - started:.0f} s", flush=True)
        print(f"[molecule] {scenario} steps (s): {step_line(steps)}", flush=True)
    if interrupted:
        return 130
    if failed:
        print(f"[molecule] failed: {' '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
