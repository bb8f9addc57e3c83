"""Call one of Patroni's unsafe REST endpoints (POST /switchover, POST /failover, PATCH /config)
from a cluster member, on that member's own API: the orchestrator's way to run `inkdeploy db`
operations (inkdeploy/remote.py ships this file over SSH; standard library only).

The member's /etc/patroni/config.yml gives the REST API's address, TLS and credentials, so no
password crosses the controller, and the request comes from a member address, which Patroni's
allowlist admits. Asking the member we run on, rather than the leader as patronictl does, keeps a
failover quick when the old leader's host is gone (patronictl waits for its dead API first).

params: method, path, body (JSON-able), timeout_s. Returns status and the answer's text;
failed with Patroni's own words when it answers an error status.
"""

import base64
import json
import ssl
import urllib.error
import urllib.request

CONFIG = "/etc/patroni/config.yml"


def _restapi():
    import yaml  # python3-yaml: a dependency of the patroni package

    with open(CONFIG) as fh:
        config = yaml.safe_load(fh) or {}
    return config.get("restapi") or {}


def request(params):
    api = _restapi()
    address = api.get("connect_address") or api.get("listen") or "127.0.0.1:8008"
    tls = bool(api.get("certfile"))
    url = ("https" if tls else "http") + "://" + address + params["path"]
    body = params.get("body")
    data = json.dumps(body).encode() if body is not None else None
    # the scheme is http or https, chosen above
    req = urllib.request.Request(url, data=data, method=params["method"])  # noqa: S310
    req.add_header("Content-Type", "application/json")
    auth = api.get("authentication") or {}
    if auth.get("username"):
        token = f"{auth['username']}:{auth.get('password', '')}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    context = None
    if tls:
        context = ssl.create_default_context(cafile=api.get("cafile") or None)
        context.check_hostname = False  # the member asks itself by address
    try:
        timeout = params.get("timeout_s", 60)
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:  # noqa: S310
            return {"status": r.status, "text": r.read().decode(errors="replace").strip()}
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()
        return {"failed": True, "status": exc.code, "msg": f"Patroni answered {exc.code}: {text}"}
    except (OSError, ValueError) as exc:
        return {"failed": True, "msg": f"Patroni's REST API at {address} did not answer: {exc}"}


def run(params):
    try:
        return request(params)
    except (OSError, KeyError, ImportError) as exc:
        return {"failed": True, "msg": f"could not read {CONFIG}: {exc}"}
