"""Change the slot weights of a load balancer configured by the nginx_lb role, on the load
balancer itself: the orchestrator's fast path for a weight step (inkdeploy/remote.py ships this
file over SSH; standard library only, Python 3.9+ as on Debian 11 and later).

It does what `playbooks/lb-weights.yml` does, with the same checks and the same result byte for
byte (a later run of the role changes nothing):
  1. read /etc/nginx/inkdeploy/upstreams.conf as the role rendered it;
  2. refuse unknown slots, weights that are not whole numbers from 0 to 1000, and an app whose
     every slot would be drained (unless allow_empty);
  3. set `weight=N` or `down` on the servers named, keep the others, and write the new
     identifier: sha1(structure identifier + weights as sorted JSON), the role's formula
     (roles/nginx_lb/vars/main.yml);
  4. check the candidate in a copy of /etc/nginx (nginx-lb-check), put it in place, `nginx -t`
     (on failure the old file is put back and nginx is not reloaded), one graceful reload;
  5. return once nginx's status server answers with the new identifier, that is once the new
     workers serve the new weights.
Weights equal to those in place change nothing and reload nothing.
"""

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request

UPSTREAM = re.compile(r"^upstream\s+(\S+)\s*\{")
SERVER = re.compile(r"^(\s*server\s+\S+\s+)(weight=\d+|down)(\s.*#\s*(\S+)\s+(\S+)\s*)$")
WEIGHTS_LINE = re.compile(r"^# inkdeploy-weights: (\{.*\})$", re.MULTILINE)
STRUCTURE_LINE = re.compile(r"^# inkdeploy-structure: ([0-9a-f]+)$", re.MULTILINE)
ID_LINE = re.compile(r'^(\s*default\s+")([0-9a-f]+)(";)$', re.MULTILINE)
STATUS_URL = re.compile(r"\((http://127\.0\.0\.1:\d+/inkdeploy/upstreams)\)")


class Refused(Exception):
    """The weights asked for are wrong; nothing was changed."""


def upstreams_id(structure, weights):
    """The identifier nginx serves for these weights (the role computes the same)."""
    text = structure + json.dumps(weights, sort_keys=True)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


def parse(text):
    """(structure id, {APP:HOST:SLOT: weight}) of an upstreams.conf rendered by the role."""
    structure = STRUCTURE_LINE.search(text)
    if not structure:
        raise Refused(
            "upstreams.conf has no structure line: it was rendered by an older nginx_lb role; "
            "run playbooks/site.yml (or loadbalancer.yml) once"
        )
    weights = {}
    app = None
    for line in text.splitlines():
        match = UPSTREAM.match(line)
        if match:
            app = match.group(1)
            continue
        match = SERVER.match(line)
        if match and app:
            weight = match.group(2)
            key = f"{app}:{match.group(4)}:{match.group(5)}"
            weights[key] = 0 if weight == "down" else int(weight.split("=", 1)[1])
    return structure.group(1), weights


def resolve(current, wanted, allow_empty):
    """The complete new weights: WANTED by APP:HOST:SLOT, then by HOST:SLOT, else as now."""
    short = {}
    for key in current:
        short.setdefault(key.split(":", 1)[1], []).append(key)
    problems = []
    unknown = sorted(k for k in wanted if k not in current and k not in short)
    if unknown:
        problems.append(
            "unknown keys {} (use HOST:SLOT or APP:HOST:SLOT)".format(", ".join(unknown))
        )
    bad = sorted(
        f"{k}={v}"
        for k, v in wanted.items()
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1000
    )
    if bad:
        problems.append(
            "weights must be whole numbers from 0 to 1000, got {}".format(", ".join(bad))
        )
    if problems:
        raise Refused("; ".join(problems))
    new = dict(current)
    # HOST:SLOT keys first, so that an APP:HOST:SLOT key wins over them (as in the role)
    for key in sorted(wanted, key=lambda k: k in current):
        for full in [key] if key in current else short[key]:
            new[full] = wanted[key]
    apps = sorted({k.split(":", 1)[0] for k in new})
    empty = [a for a in apps if not any(v > 0 for k, v in new.items() if k.startswith(a + ":"))]
    if empty and not allow_empty:
        raise Refused(
            "every slot of {} would be drained (weight 0), so it could only answer 502; "
            "set nginx_lb_allow_empty_upstream to allow it".format(", ".join(empty))
        )
    return new


def render(text, weights, new_id):
    """TEXT with WEIGHTS on its server lines, the weights line and the identifier."""
    out = []
    app = None
    for line in text.splitlines():
        match = UPSTREAM.match(line)
        if match:
            app = match.group(1)
        match = SERVER.match(line)
        if match and app:
            weight = weights[f"{app}:{match.group(4)}:{match.group(5)}"]
            setting = f"weight={weight}" if weight > 0 else "down"
            line = match.group(1) + setting + match.group(3)
        out.append(line)
    result = "\n".join(out) + ("\n" if text.endswith("\n") else "")
    result = WEIGHTS_LINE.sub(
        lambda _: "# inkdeploy-weights: " + json.dumps(weights, sort_keys=True), result, count=1
    )
    return ID_LINE.sub(lambda m: m.group(1) + new_id + m.group(3), result, count=1)


def _check(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace").strip()


def _served(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - http://127.0.0.1 from the file
            return response.read(200).decode(errors="replace").strip()
    except (OSError, ValueError):
        return ""


def apply(params):
    started = time.monotonic()
    nginx_dir = params.get("nginx_dir", "/etc/nginx")
    rel = params.get("rel", "inkdeploy/upstreams.conf")
    path = os.path.join(nginx_dir, rel)
    with open(path) as handle:
        text = handle.read()
    structure, current = parse(text)
    new = resolve(current, params.get("weights") or {}, bool(params.get("allow_empty")))
    if new == current:
        return {"changed": False, "weights": new, "seconds": time.monotonic() - started}
    new_id = upstreams_id(structure, new)
    candidate = os.path.join(os.path.dirname(path), ".upstreams.inkdeploy-candidate")
    with open(candidate, "w") as handle:
        handle.write(render(text, new, new_id))
    os.chmod(candidate, 0o644)
    rc, out = _check([params.get("check_script", "/usr/local/sbin/nginx-lb-check"), rel, candidate])
    if rc != 0:
        os.unlink(candidate)
        raise Refused(f"nginx refused the new upstreams, nothing was changed: {out}")
    backup = text
    os.replace(candidate, path)
    rc, out = _check(["/usr/sbin/nginx", "-t", "-q"])
    if rc != 0:
        with open(candidate, "w") as handle:
            handle.write(backup)
        os.replace(candidate, path)
        raise Refused(f"nginx -t failed, the old upstreams were put back: {out}")
    rc, out = _check(["systemctl", "reload", "nginx"])
    if rc != 0:
        raise Refused(f"systemctl reload nginx failed: {out}")
    url = STATUS_URL.search(text)
    deadline = time.monotonic() + float(params.get("wait_s", 10))
    while url:
        if _served(url.group(1)) == new_id:
            break
        if time.monotonic() > deadline:
            raise Refused(
                "nginx did not serve the new weights within {} s".format(params.get("wait_s"))
            )
        time.sleep(0.05)
    return {
        "changed": True,
        "weights": new,
        "id": new_id,
        "seconds": time.monotonic() - started,
    }


def run(params):
    try:
        return apply(params)
    except Refused as exc:
        return {"failed": True, "msg": str(exc)}
    except OSError as exc:
        return {"failed": True, "msg": f"could not change the upstreams: {exc}"}
