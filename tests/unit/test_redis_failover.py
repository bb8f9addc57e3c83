"""`inkdeploy redis failover`'s decisions without a fleet: when it may start (and the sentence
it refuses with), when the sentinels have agreed on a new master, what ROLE says, the deploy
lock and its history record. The lab runs the verb for real (molecule/redis-sentinel, verify
tests/ops)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inkdeploy.errors import InkdeployError
from inkdeploy.inventory import Environment, parse_policy
from inkdeploy.ops.redis import summarize
from inkdeploy.ops.redis_failover import (
    NO_LOCK,
    FailoverRefused,
    agreed_master,
    plan_failover,
    plan_message,
    replicates_from,
)
from inkdeploy.preflight import Observation
from tests.unit.test_ops import sentinel
from tests.unit.test_preflight import down

HOSTS = {"10.0.0.5": "redis1", "10.0.0.6": "redis2", "10.0.0.7": "redis3"}
SENTINELS = ["s1", "s2", "s3"]
MASTER = ["10.0.0.5", "6379"]
HEALTHY = [("10.0.0.6", "slave", "ok"), ("10.0.0.7", "slave", "ok")]


def status(*obs: Observation, name: str = "inkdeploy"):
    return summarize(list(obs), name, HOSTS)


def test_a_healthy_cluster_plans_the_failover_with_its_fit_replicas() -> None:
    plan = plan_failover(
        status(*(sentinel(s, MASTER, replicas=HEALTHY) for s in SENTINELS)), SENTINELS
    )
    assert (plan.master, plan.master_host) == ("10.0.0.5:6379", "redis1")
    assert plan.candidates == ["10.0.0.6:6379", "10.0.0.7:6379"]
    assert plan.candidate_hosts == ["redis2", "redis3"]
    assert (plan.sentinels, plan.answered, plan.needed) == (SENTINELS, 3, 2)
    said = plan_message(plan, None)
    assert said.startswith('Would move the Redis master of "inkdeploy" away from redis1')
    assert "redis2 (10.0.0.6:6379), redis3 (10.0.0.7:6379)" in said
    assert said.endswith(f"({NO_LOCK}). Nothing was changed.")


def test_one_sentinel_down_still_a_majority_and_the_needed_count_follows_who_answered() -> None:
    plan = plan_failover(
        status(sentinel("s1", MASTER, replicas=HEALTHY), sentinel("s2", MASTER), down("s3")),
        SENTINELS,
    )
    assert (plan.sentinels, plan.answered, plan.needed) == (["s1", "s2"], 2, 2)


def test_refused_when_the_sentinels_disagree() -> None:
    split = status(sentinel("s1", MASTER, replicas=HEALTHY), sentinel("s2", ["10.0.0.6", "6379"]),
                   sentinel("s3", MASTER))  # fmt: skip
    with pytest.raises(FailoverRefused) as refused:
        plan_failover(split, SENTINELS)
    assert refused.value.message == (
        'The sentinels disagree on the Redis master of "inkdeploy" (s1 says 10.0.0.5:6379, '
        "s2 says 10.0.0.6:6379, s3 says 10.0.0.5:6379): a failover in progress or a split; "
        "wait until `inkdeploy redis status` shows one master, then run the failover again."
    )


def test_refused_when_fewer_than_a_majority_answer() -> None:
    with pytest.raises(FailoverRefused) as refused:
        plan_failover(
            status(sentinel("s1", MASTER, replicas=HEALTHY), down("s2"), down("s3", "refused")),
            SENTINELS,
        )
    assert refused.value.message == (
        'Only 1 of 3 sentinels named a Redis master for "inkdeploy" (s2: no answer within 2 s; '
        "s3: refused), 2 needed to agree on a new one; bring the sentinels back first "
        "(`inkdeploy redis status`)."
    )


def test_refused_when_no_sentinel_monitors_the_master_name() -> None:
    with pytest.raises(FailoverRefused) as refused:
        plan_failover(status(*(sentinel(s, None) for s in SENTINELS), name="typo"), SENTINELS)
    assert refused.value.message.startswith(
        'The sentinels (s1, s2, s3) answer but monitor no master named "typo"; set '
        "redis_sentinel_master_name"
    )
    # as real sentinels answer: SENTINEL MASTER typo is an error, so the probe fails
    unknown = [down(s, "ERR No such master with that name") for s in SENTINELS]
    with pytest.raises(FailoverRefused, match='monitor no master named "typo"'):
        plan_failover(status(*unknown, name="typo"), SENTINELS)


@pytest.mark.parametrize(
    "replicas",
    [
        [],
        [("10.0.0.6", "slave,s_down", "ok"), ("10.0.0.7", "slave", "err")],
        [("10.0.0.6", "slave,disconnected", "ok"), ("10.0.0.7", "slave,o_down", "ok")],
    ],
)
def test_refused_without_a_replica_fit_to_take_over(replicas) -> None:
    with pytest.raises(FailoverRefused) as refused:
        plan_failover(
            status(*(sentinel(s, MASTER, replicas=replicas) for s in SENTINELS)), SENTINELS
        )
    said = refused.value.message
    assert said.startswith("No replica of the Redis master redis1 (10.0.0.5:6379) could take over")
    assert said.endswith("`inkdeploy redis status`) and try again.")
    if replicas:
        assert "redis2 (10.0.0.6:6379): flags slave," in said
        assert "redis3 (10.0.0.7:6379): flags slave" in said


def test_refused_while_a_failover_is_under_way_and_without_sentinels() -> None:
    busy = status(sentinel("s1", MASTER, flags="master,failover_in_progress", replicas=HEALTHY),
                  sentinel("s2", MASTER), sentinel("s3", MASTER))  # fmt: skip
    with pytest.raises(FailoverRefused, match="under way already"):
        plan_failover(busy, SENTINELS)
    with pytest.raises(FailoverRefused, match="no host in group sentinel"):
        plan_failover(status(), [])


def test_a_refusal_exits_2_with_one_sentence_and_no_traceback(monkeypatch) -> None:
    import inkdeploy.ops.redis_failover as verb

    env = Environment(Path("x"), "lab", {"sentinel": SENTINELS}, {}, parse_policy({}))
    monkeypatch.setattr(verb, "load_environment", lambda inventory, **_kw: env)
    monkeypatch.setattr(
        verb, "redis_status", lambda env: status(*(sentinel(s, MASTER) for s in SENTINELS))
    )
    from inkdeploy.cli import app

    result = CliRunner().invoke(app, ["redis", "failover", "-i", "x"])
    assert result.exit_code == 2
    assert "No replica of the Redis master redis1" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_agreement_needs_a_majority_naming_one_new_address() -> None:
    old = "10.0.0.5:6379"
    assert agreed_master({"s1": old, "s2": old, "s3": old}, old, 2) is None
    assert agreed_master({"s1": "10.0.0.6:6379", "s2": old, "s3": None}, old, 2) is None
    assert agreed_master({"s1": "10.0.0.6:6379", "s2": "10.0.0.7:6379", "s3": old}, old, 2) is None
    new = {"s1": "10.0.0.6:6379", "s2": "10.0.0.6:6379", "s3": old}
    assert agreed_master(new, old, 2) == "10.0.0.6:6379"


def test_role_says_replica_of_the_new_master_with_its_link_up() -> None:
    assert replicates_from(["slave", "10.0.0.6", 6379, "connected", 1234], "10.0.0.6:6379")
    assert not replicates_from(["slave", "10.0.0.6", 6379, "sync", -1], "10.0.0.6:6379")
    assert not replicates_from(["slave", "10.0.0.7", 6379, "connected", 1], "10.0.0.6:6379")
    assert not replicates_from(["master", 1234, []], "10.0.0.6:6379")
    assert not replicates_from(OSError("refused"), "10.0.0.6:6379")


class _Lock:
    def __init__(self) -> None:
        self.released: list[tuple[str, dict]] = []

    def release(self, rollout: str, record: dict) -> None:
        self.released.append((rollout, record))


class _Session:
    """What redis_failover uses of a Session: hold the lock, release it with a record."""

    def __init__(self, env: Environment) -> None:
        self.env, self.lock, self.heartbeat, self.held = env, _Lock(), None, []

    @contextmanager
    def hold(self, holder: dict) -> Iterator[None]:
        self.held.append(holder)
        yield

    def secrets(self) -> list[str]:
        return ["s3cret"]


@pytest.mark.parametrize("fails", [False, True])
def test_with_a_deploy_lock_it_is_held_and_released_with_a_history_record(
    monkeypatch, fails: bool
) -> None:
    import inkdeploy.ops.redis_failover as verb

    groups = {"lb": ["lb1"], "redis": ["redis1"], "sentinel": SENTINELS}
    env = Environment(Path("x"), "prod", groups, {"lb1": {}}, parse_policy({}))
    session = _Session(env)
    healthy = status(*(sentinel(s, MASTER, replicas=HEALTHY) for s in SENTINELS))
    monkeypatch.setattr(verb, "load_environment", lambda inventory, **_kw: env)
    monkeypatch.setattr(verb, "redis_status", lambda env: healthy)
    monkeypatch.setattr("inkdeploy.ops.held.Session.of", lambda env: session)

    def failover(env, plan, wait_s, lock):
        if fails:
            raise InkdeployError("no agreement")
        return verb.FailoverResult(plan.master_name, plan.master, plan.master_host,
                                   plan.candidates, lock=lock, new_master="10.0.0.6:6379",
                                   new_master_host="redis2")  # fmt: skip

    monkeypatch.setattr(verb, "_failover", failover)
    if fails:
        with pytest.raises(InkdeployError):
            verb.redis_failover(Path("x"), message="kernel s3cret")
    else:
        assert verb.redis_failover(Path("x"), message="kernel s3cret").lock == "held"
    assert [h["strategy"] for h in session.held] == ["redis-failover"]
    [(rollout, record)] = session.lock.released
    assert rollout.startswith("redis-failover-") and record["rollout"] == rollout
    assert (record["kind"], record["host"], record["reason"]) == (
        "redis-failover", "redis1", "kernel ***"
    )  # fmt: skip
    assert record["result"] == ("failed" if fails else "succeeded")
    assert record.get("new_master") == (None if fails else "redis2")
