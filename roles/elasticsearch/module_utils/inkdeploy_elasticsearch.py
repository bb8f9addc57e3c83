"""Small Elasticsearch REST client and the "make it so" logic of the elasticsearch role's modules.

Standard library only (it runs on the Elasticsearch host, under the host's Python). The logic
takes a client object, so tests can drive it with an in-memory fake.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request


class EsError(Exception):
    """Elasticsearch refused a request (or could not be reached)."""


# The options through which every module of the role reaches Elasticsearch (see client_from).
CONNECTION_OPTIONS = {
    "url": {"type": "str", "required": True},
    "username": {"type": "str", "required": True},
    "password": {"type": "str", "required": True, "no_log": True},
    "ca_path": {"type": "path"},
}


def client_from(params):
    """An EsClient from a module's CONNECTION_OPTIONS parameters."""
    return EsClient(params["url"], params["username"], params["password"], params["ca_path"])


class EsClient:
    def __init__(self, url, username, password, ca_path=None, timeout=30):
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_path) if ca_path else None

    def request(self, method, path, body=None, auth=None):
        """(status, parsed JSON body or None). auth: (user, password), default the client's."""
        user, password = auth or (self.username, self.password)
        data = None if body is None else json.dumps(body).encode()
        # The URL comes from the role (https://NODE:PORT), never from user input.
        url = f"{self.url}/{path.lstrip('/')}"
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:  # noqa: S310
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise EsError(f"cannot reach Elasticsearch at {self.url}: {exc}") from exc


def _json(raw):
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"raw": raw.decode(errors="replace")}


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_subset(wanted, current):
    """True when every key and value of WANTED is in CURRENT.

    Elasticsearch adds defaults and metadata to what it returns (an ILM delete action comes back
    with delete_searchable_snapshot, a role with run_as and metadata) and returns index settings
    as strings; so dicts compare key by key, lists element by element, scalars as strings.
    """
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(
            key in current and is_subset(value, current[key]) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(wanted) == len(current)
            and all(is_subset(w, c) for w, c in zip(wanted, current, strict=True))
        )
    return _scalar(wanted) == _scalar(current)


def _extract(document, keys):
    for key in keys:
        try:
            document = document[key]
        except (KeyError, IndexError, TypeError):
            return None
    return document


def ensure_object(client, path, body, current_keys, compare_key=None, check_mode=False):
    """PUT BODY to PATH unless GET PATH already holds it. Returns (changed, current).

    current_keys: where the object sits in the GET answer (for example [name, "policy"]);
    compare_key: the part of BODY to compare with it (default the whole BODY).
    """
    status, answer = client.request("GET", path)
    if status not in (200, 404):
        raise EsError(f"GET {path} returned {status}: {answer}")
    current = _extract(answer, current_keys) if status == 200 else None
    wanted = body[compare_key] if compare_key else body
    if current is not None and is_subset(wanted, current):
        return False, current
    if not check_mode:
        status, answer = client.request("PUT", path, body)
        if status not in (200, 201):
            raise EsError(f"PUT {path} returned {status}: {answer}")
    return True, current


def ensure_user(
    client, name, password, roles=None, full_name=None, reserved=False, check_mode=False
):
    """A native (or reserved, password only) user with this password, roles and full name.

    Returns (changed, what) where what lists the changes made: created, password, roles, enabled.
    """
    changes = []
    status, _ = client.request("GET", "_security/_authenticate", auth=(name, password))
    if status not in (200, 401):
        raise EsError(f"authenticating as {name} returned {status}")
    password_ok = status == 200
    if reserved:
        if not password_ok:
            changes.append("password")
            if not check_mode:
                _expect(client, "POST", f"_security/user/{name}/_password", {"password": password})
        return bool(changes), changes

    status, answer = client.request("GET", f"_security/user/{name}")
    if status not in (200, 404):
        raise EsError(f"GET _security/user/{name} returned {status}: {answer}")
    body = {"roles": sorted(roles or []), "full_name": full_name or ""}
    if status == 404:
        changes.append("created")
        if not check_mode:
            _expect(client, "PUT", f"_security/user/{name}", {**body, "password": password})
        return True, changes
    current = answer[name]
    if (
        sorted(current.get("roles", [])) != body["roles"]
        or (current.get("full_name") or "") != body["full_name"]
    ):
        changes.append("roles")
    if not password_ok:
        changes.append("password")
    if changes and not check_mode:
        _expect(
            client,
            "PUT",
            f"_security/user/{name}",
            {**body, **({"password": password} if not password_ok else {})},
        )
    if not current.get("enabled", True):
        changes.append("enabled")
        if not check_mode:
            _expect(client, "PUT", f"_security/user/{name}/_enable", None)
    return bool(changes), changes


def _expect(client, method, path, body):
    status, answer = client.request(method, path, body)
    if status not in (200, 201):
        raise EsError(f"{method} {path} returned {status}: {answer}")
    return answer
