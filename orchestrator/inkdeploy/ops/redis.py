"""`inkdeploy redis status`: the Redis master as the sentinels agree on it, and its replicas.

Every host of group sentinel is asked at once (2 s per connect and read): the master's address,
the master's flags as that sentinel sees them, and the replicas with their link state. A
sentinel that does not answer is named; the rest still give the picture.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.inventory import Environment
from inkdeploy.ops import without_force
from inkdeploy.preflight import Observation, evaluate_sentinels, run_probes, sentinel_tasks


@dataclass(frozen=True)
class Replica:
    address: str  # ip:port
    host: str | None  # the inventory name with that address
    flags: list[str]
    link: str  # master-link-status: ok | err
    offset: int | None  # slave-repl-offset
    link_down_s: float | None  # master-link-down-time, seconds (0 when the link is up)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class RedisStatus:
    master_name: str
    master: str | None = None  # ip:port the answering majority names
    master_host: str | None = None
    master_flags: list[str] = field(default_factory=list)
    said: dict[str, str | None] = field(default_factory=dict)  # sentinel host -> its master
    replicas: list[Replica] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "master_name": self.master_name,
            "master": self.master,
            "master_host": self.master_host,
            "master_flags": self.master_flags,
            "sentinels": self.said,
            "replicas": [r.to_dict() for r in self.replicas],
            "unreachable": self.unreachable,
            "problems": self.problems,
        }


def _pairs(flat: Any) -> dict[str, str]:
    """SENTINEL MASTER/REPLICAS answer each entry as a flat [key, value, key, value, ...]."""
    if not isinstance(flat, list):
        return {}
    items = [str(x) for x in flat]
    return dict(zip(items[0::2], items[1::2], strict=False))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def summarize(
    obs: list[Observation], master_name: str, hosts_by_address: dict[str, str]
) -> RedisStatus:
    """What the sentinels said (pure). Each observation's data: [master address, master
    info, replicas], as the three SENTINEL commands answer."""
    status = RedisStatus(master_name=master_name)
    named: dict[str, str | None] = {}
    for o in obs:
        if o.error is not None:
            status.unreachable[o.host] = o.error
            continue
        addr = o.data[0] if isinstance(o.data, list) and o.data else None
        named[o.host] = (
            f"{addr[0]}:{addr[1]}" if isinstance(addr, list) and len(addr) == 2 else None
        )
    status.said = named
    check = evaluate_sentinels(
        [Observation(o.host, o.target, o.seconds, o.data[0] if o.error is None else None, o.error)
         for o in obs],
        master_name,
    )  # fmt: skip
    status.problems = [without_force(p) for p in check.problems]
    votes = Counter(a for a in named.values() if a)
    if not votes:
        return status
    status.master = votes.most_common(1)[0][0]
    status.master_host = hosts_by_address.get(status.master.rsplit(":", 1)[0])
    # the replicas and flags as a sentinel that names the agreed master sees them
    source = next(o for o in obs if o.error is None and named.get(o.host) == status.master)
    info = _pairs(source.data[1]) if len(source.data) > 1 else {}
    status.master_flags = [f for f in info.get("flags", "").split(",") if f]
    for entry in (
        source.data[2] if len(source.data) > 2 and isinstance(source.data[2], list) else []
    ):
        r = _pairs(entry)
        ip, port = r.get("ip", "?"), r.get("port", "?")
        down_ms = _int(r.get("master-link-down-time"))
        status.replicas.append(
            Replica(
                address=f"{ip}:{port}",
                host=hosts_by_address.get(ip),
                flags=[f for f in r.get("flags", "").split(",") if f],
                link=r.get("master-link-status", "?"),
                offset=_int(r.get("slave-repl-offset")),
                link_down_s=down_ms / 1000 if down_ms is not None else None,
            )
        )
    if {"s_down", "o_down"} & set(status.master_flags):
        status.problems.append(
            f"Sentinel {source.host} flags the master {status.master} as "
            f"{','.join(status.master_flags)}: it is down; the sentinels fail over on their own "
            "when a quorum agrees (docs/redis.md, failover by hand)."
        )
    for r in status.replicas:
        if r.link != "ok" or {"s_down", "o_down", "disconnected"} & set(r.flags):
            status.problems.append(
                f"Replica {r.host or r.address} is not replicating (flags {','.join(r.flags)}, "
                f"link {r.link}): check 'systemctl status redis-server' on it."
            )
    return status


def redis_status(env: Environment, timeout_s: float = 2.0) -> RedisStatus:
    """Ask every sentinel (read-only, in parallel) and summarize."""
    tasks, master, _auth = sentinel_tasks(env, timeout_s, _questions)
    seen = run_probes(tasks, timeout_s)
    hosts = env.groups.get("redis", []) or env.groups.get("sentinel", [])
    by_address = {env.address(h): h for h in hosts}
    return summarize([o for _, o in seen], master, by_address)


def _questions(master: str) -> list[tuple[str, ...]]:
    return [
        ("SENTINEL", "get-master-addr-by-name", master),
        ("SENTINEL", "master", master),
        ("SENTINEL", "replicas", master),
    ]
