"""What every gate returns: pass or not, one sentence saying what it saw, and the evidence."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

GateKind = Literal["http", "prometheus", "judge", "manual"]
# pass: go on. fail: roll back. marginal: the judge could not decide (the step is repeated once,
# then counts as fail). nodata: nothing to judge (the gate's no_data policy turns it into
# pass, pause or fail before it reaches the executor). pause: wait for an operator.
Outcome = Literal["pass", "fail", "marginal", "nodata", "pause"]


@dataclass(frozen=True)
class GateResult:
    gate: str  # the gate's name, e.g. "app healthy"
    kind: GateKind
    outcome: Outcome
    # One sentence an operator can act on: what was checked, on what, what was seen, e.g.
    # 'GET http://10.77.41.12:8002/healthz returned 503 after 5 tries over 10 s; last body: ...'
    message: str
    target: str = ""  # "app2 green (2.0.0)", "2.0.0 vs 1.0.0", ...
    evidence: dict[str, Any] = field(default_factory=dict)  # values, threshold, samples, ...
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}
