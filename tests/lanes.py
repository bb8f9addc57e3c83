"""Run test lanes side by side and fail if any lane fails.

    python tests/lanes.py NAME=COMMAND [NAME=COMMAND ...]

Each lane is a shell command that brings up its own labs on its own subnets (the stack tests'
lab, the Molecule scenarios' labs), so lanes share nothing but the CPU. A lane's output goes to
.cache/test-logs/NAME.log; while they run, a line every few minutes says what each is doing; at
the end every log is printed whole (failed lanes last, so a CI log's tail shows the failure),
then a summary. The exit status is the first failed lane's (pytest's 5, "nothing collected",
stays a failure), 0 only if every lane passed. Ctrl-C or SIGTERM sends SIGINT to every lane's
process group, so pytest and Molecule still take their labs down (SIGKILL after GRACE_S).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

LOGS = Path(__file__).resolve().parent.parent / ".cache" / "test-logs"
TICK_S = 180.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
GRACE_S = 300.0


@dataclass
class Lane:
    name: str
    command: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def minutes(self) -> str:
        seconds = (self.ended or time.monotonic()) - self.started
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"

    def last_line(self) -> str:
        try:
            with self.log.open("rb") as fh:
                fh.seek(max(0, self.log.stat().st_size - 4096))
                lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines()]
        except OSError:
            return ""
        lines = [_ANSI.sub("", ln).strip(" │*") for ln in lines]
        return next((ln for ln in reversed(lines) if ln), "")[:120]


def parse(args: list[str]) -> list[Lane]:
    lanes = []
    for arg in args:
        name, sep, command = arg.partition("=")
        if not sep or not name.isidentifier() or not command.strip():
            sys.exit(f"lanes: {arg!r} is not NAME=COMMAND; give each lane a name and a command.")
        lanes.append(Lane(name, command, LOGS / f"{name}.log"))
    if not lanes:
        sys.exit("lanes: no lane given; pass NAME=COMMAND for each lane.")
    return lanes


def say(text: str) -> None:
    print(f"[lanes {time.strftime('%H:%M:%S')}] {text}", flush=True)


def start(lane: Lane) -> None:
    lane.log.parent.mkdir(parents=True, exist_ok=True)
    with lane.log.open("wb") as out:
        lane.proc = subprocess.Popen(
            ["bash", "-c", lane.command],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    lane.started = time.monotonic()
    say(f"{lane.name}: started ({lane.command}), log in {lane.log}")


def signal_all(lanes: list[Lane], signum: int) -> None:
    for lane in lanes:
        if lane.proc is not None and lane.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lane.proc.pid, signum)


def stop_all(lanes: list[Lane]) -> None:
    """SIGINT (pytest tears its fixtures down on it), then SIGKILL whatever outlives GRACE_S."""
    signal_all(lanes, signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    for lane in lanes:
        if lane.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                lane.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    signal_all(lanes, signal.SIGKILL)


def verdict(rc: int | None) -> str:
    return "passed" if rc == 0 else f"FAILED ({rc})"


def wait(lanes: list[Lane]) -> None:
    last_tick = time.monotonic()
    while any(lane.ended is None for lane in lanes):
        time.sleep(0.25)
        for lane in lanes:
            if lane.ended is None and lane.proc is not None and lane.proc.poll() is not None:
                lane.ended = time.monotonic()
                say(f"{lane.name}: {verdict(lane.proc.returncode)} after {lane.minutes}")
        if time.monotonic() - last_tick >= TICK_S:
            last_tick = time.monotonic()
            for lane in lanes:
                if lane.ended is None:
                    say(f"{lane.name}: running for {lane.minutes}: {lane.last_line()}")


def report(lanes: list[Lane]) -> int:
    failed = [lane for lane in lanes if lane.proc is None or lane.proc.returncode != 0]
    for lane in [lane for lane in lanes if lane not in failed] + failed:
        print(f"\n{'=' * 30} lane {lane.name}: {lane.command} {'=' * 30}", flush=True)
        sys.stdout.buffer.write(lane.log.read_bytes())
        sys.stdout.flush()
    print()
    for lane in lanes:
        rc = lane.proc.returncode if lane.proc is not None else None
        say(f"{lane.name}: {verdict(rc)} in {lane.minutes}")
    if not failed:
        return 0
    rc = failed[0].proc.returncode if failed[0].proc is not None else 1
    return rc if rc and rc > 0 else 1


def main(args: list[str]) -> int:
    lanes = parse(args)

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        say(f"{signal.Signals(signum).name}: stopping every lane")
        signal_all(lanes, signal.SIGINT)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    for lane in lanes:
        start(lane)
    try:
        wait(lanes)
    finally:
        stop_all(lanes)
    return report(lanes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
