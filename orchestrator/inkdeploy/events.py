"""Rollout events: one record per thing that happened, fanned out to sinks.

``Events.emit`` redacts every event, then hands it to each sink: a JSON lines file (the record
that survives a killed orchestrator), stdout for ``--json``, webhooks and Grafana annotations.
Network sinks deliver from a background thread, so a slow or dead receiver never stalls the
rollout, and they never raise: delivery failures are logged as warnings naming the host only.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import httpx

from inkdeploy.config import Notify

log = logging.getLogger(__name__)

MASK = "***"
# Event types a webhook receives by default; a "gate" event counts unless its outcome is "pass".
IMPORTANT_TYPES = frozenset(
    {
        "rollout_started",
        "rollout_finished",
        "rollback_started",
        "step_failed",
        "lock_refused",
        "paused",
    }
)
# Pauses between the three tries of a webhook or Grafana request.
RETRY_BACKOFF_S = (0.25, 0.75)

_SECRET_KEY = re.compile(
    r"password|passwd|secret|token|api[_-]?key|private[_-]?key|authorization|cookie|credential"
    r"|vault|encryption[_-]?key",
    re.IGNORECASE,
)
# scheme://user:password@ anywhere in a string; the password is masked, the user kept.
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):([^\s/@]*)@")
# In command lines and messages: the value after a secret-looking name (PGPASSWORD=x,
# api_key: x, --token x, --db-password=x) and after an Authorization header's scheme; the name
# and the scheme are kept.
_SECRET_WORD = r"[\w.-]*(?:password|passwd|secret|token|api[_-]?key)[\w.-]*"  # noqa: S105 - a pattern of names
_SECRET_ARG = re.compile(
    rf"(?P<name>\b{_SECRET_WORD}\s*[=:]\s*|(?<!\S)--?{_SECRET_WORD}\s+(?=[^-\s]))"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"',;]+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"(?P<name>authorization\s*:\s*(?:bearer|basic|token|apikey)\s+)(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Event:
    type: str
    rollout: str
    ts: float
    data: dict[str, Any]

    def to_json(self) -> str:
        """One line: type, rollout, ts (ISO-8601 UTC), epoch (seconds) and data; keys sorted."""
        iso = datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="milliseconds")
        record = {
            "type": self.type,
            "rollout": self.rollout,
            "ts": iso.replace("+00:00", "Z"),
            "epoch": self.ts,
            "data": self.data,
        }
        return json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of VALUE safe to write anywhere.

    Dict values under keys that look secret ("db_password", "Authorization", ...) become "***";
    each of SECRETS (4 characters or more) is masked wherever it appears inside a string; the
    password in a URL's userinfo (https://user:pw@host), the value after a secret-looking name
    in a command line or message (PGPASSWORD=pw, --token pw) and an Authorization header's
    credentials are masked. Objects other than dicts,
    lists, tuples, sets, strings, numbers, booleans and None are turned into strings first, so
    an object whose str() shows a secret cannot carry it past this function.
    """
    known = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    return _redact(value, known)


# grafana_annotations_token_name, ansible_ssh_private_key_file, INKDEPLOY_GRAFANA_TOKEN_ENV...:
# names of or paths to a secret, and their values are ordinary words that must stay readable.
_NAMES_ABOUT_A_SECRET = ("_name", "_file", "_path", "_dir", "_env", "_user", "_days", "_url")


def environment_secrets(env: Mapping[str, Any]) -> list[str]:
    """The values of the variables in ENV (the controller's environment, or an inventory's
    host variables) whose names look secret (PGPASSWORD, AWS_SECRET_ACCESS_KEY, VAULT_TOKEN,
    postgresql_app_password...): masked wherever they would appear in an event. Templates
    ("{{ redis_password }}") are not values."""
    return [
        value
        for name, value in env.items()
        if _SECRET_KEY.search(name)
        and not name.lower().endswith(_NAMES_ABOUT_A_SECRET)
        and isinstance(value, str)
        and value
        and "{{" not in value
    ]


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and _SECRET_KEY.search(key) else _redact(v, secrets)
            for key, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [_redact(v, secrets) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = _AUTH_HEADER.sub(rf"\g<name>{MASK}", text)
    text = _SECRET_ARG.sub(rf"\g<name>{MASK}", text)
    return _USERINFO.sub(rf"\1:{MASK}@", text)


# httpx logs every request's full URL at INFO: a webhook's secret path or userinfo, so the
# requests of these sinks' workers are kept out of the log (failures are logged here instead).
_WORKER_PREFIX = "inkdeploy-sink-"


def _not_from_a_sink_worker(record: logging.LogRecord) -> bool:
    return not threading.current_thread().name.startswith(_WORKER_PREFIX)


logging.getLogger("httpx").addFilter(_not_from_a_sink_worker)


def _host(url: str) -> str:
    """host[:port] of URL, for log lines: never the path (webhook paths often are the secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def _ms(ts: float) -> int:
    return int(ts * 1000)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonLinesFile:
    """Appends one JSON line per event, flushed and fsync'd before emit returns, mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._file.write(event.to_json() + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()


class JsonStdout:
    """One JSON line per event on STREAM (standard output by default), for ``--json``."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def emit(self, event: Event) -> None:
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


class _BackgroundSink:
    """Queues events for a worker thread; subclasses choose events and deliver them.

    ``close()`` lets the worker drain the queue for at most CLOSE_TIMEOUT seconds, then gives up
    on what is left (logged) and returns; the daemon worker cannot keep the process alive.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        close_timeout: float,
        name: str,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.host = _host(url)
        self._name = name
        self._close_timeout = close_timeout
        self._client = httpx.Client(timeout=timeout, verify=verify)
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._give_up = threading.Event()
        self._deadline: float | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"{_WORKER_PREFIX}{name}", daemon=True
        )
        self._thread.start()

    def wants(self, event: Event) -> bool:
        return True

    def emit(self, event: Event) -> None:
        if self._deadline is None and self.wants(event):
            self._queue.put(event)

    def finish(self) -> float:
        """Stop taking events and start the close-timeout clock; returns the deadline."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self._close_timeout
            self._queue.put(None)
        return self._deadline

    def close(self) -> None:
        deadline = self.finish()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._give_up.set()
            log.warning(
                "%s to %s: gave up after %.0f s with %d event(s) not delivered",
                self._name,
                self.host,
                self._close_timeout,
                self._queue.qsize(),
            )

    def _run(self) -> None:
        try:
            while (event := self._queue.get()) is not None:
                if self._give_up.is_set():
                    continue
                try:
                    self._deliver(event)
                except Exception:  # a bug here must not kill the worker or reach the rollout
                    log.warning(
                        "%s to %s: %s not delivered",
                        self._name,
                        self.host,
                        event.type,
                        exc_info=True,
                    )
        finally:
            self._client.close()

    def _deliver(self, event: Event) -> None:
        raise NotImplementedError

    def _request(self, what: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """METHOD URL with up to two retries (transport errors, 429, 5xx); None if it failed."""
        problem, tries = "", 0
        for pause in (0.0, *RETRY_BACKOFF_S):
            if pause and self._give_up.wait(pause):
                break
            tries += 1
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {redact(str(exc), [url])}"
                continue
            if response.status_code < 400:
                return response
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break
        log.warning(
            "%s to %s: %s not delivered after %d tries: %s",
            self._name,
            self.host,
            what,
            tries,
            problem,
        )
        return None


class Webhook(_BackgroundSink):
    """POSTs each event's JSON to URL; by default only the important types (IMPORTANT_TYPES and
    gates that did not pass), or exactly TYPES when given."""

    def __init__(
        self,
        url: str,
        timeout: float = 5,
        types: set[str] | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.types = types
        super().__init__(url, timeout, close_timeout, "webhook")

    def wants(self, event: Event) -> bool:
        if self.types is not None:
            return event.type in self.types
        if event.type == "gate":
            return event.data.get("outcome") != "pass"
        return event.type in IMPORTANT_TYPES

    def _deliver(self, event: Event) -> None:
        self._request(
            event.type,
            "POST",
            self.url,
            content=event.to_json(),
            headers={"Content-Type": "application/json"},
        )


class GrafanaAnnotations(_BackgroundSink):
    """A Grafana region annotation per rollout (started to finished) and a point per rollback.

    Reads ``app``, ``strategy``, ``version`` from rollout_started, ``result`` from
    rollout_finished and ``reason`` from rollback_started.
    """

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 5,
        close_timeout: float = 10.0,
        cafile: Path | None = None,
    ) -> None:
        self._api = url.rstrip("/") + "/api/annotations"
        self._headers = {"Authorization": f"Bearer {token}"}
        # Per rollout: the region's annotation id (None if creating it failed) and its start.
        self._started: dict[str, tuple[int | None, Event]] = {}
        # Grafana's certificate from the role's internal CA: trust that CA (and only it).
        verify = ssl.create_default_context(cafile=str(cafile)) if cafile else True
        super().__init__(url, timeout, close_timeout, "grafana annotations", verify)

    def wants(self, event: Event) -> bool:
        return event.type in {"rollout_started", "rollout_finished", "rollback_started"}

    def _deliver(self, event: Event) -> None:
        if event.type == "rollout_started":
            text = f"inkdeploy rollout {event.rollout}: {_release(event)} started"
            self._started[event.rollout] = (self._create(event, ["deploy"], text), event)
        elif event.type == "rollout_finished":
            annotation_id, started = self._started.pop(event.rollout, (None, event))
            result = event.data.get("result", "finished")
            text = (
                f"inkdeploy rollout {event.rollout}: {_release(started)} {result}"
                f" in {round(event.ts - started.ts)} s"
            )
            if annotation_id is None:  # the start was not annotated: add the whole region now
                self._create(started, ["deploy", str(result)], text, end=event.ts)
                return
            body = {"timeEnd": _ms(event.ts), "text": text}
            url = f"{self._api}/{annotation_id}"
            self._request(event.type, "PATCH", url, json=body, headers=self._headers)
        elif event.type == "rollback_started":
            _, started = self._started.get(event.rollout, (None, event))
            text = f"inkdeploy rollout {event.rollout}: rolling back {_release(started)}"
            if reason := event.data.get("reason"):
                text = f"{text}: {reason}"
            self._create(started, ["rollback"], text, start=event.ts)

    def _create(
        self,
        release: Event,
        tags: list[str],
        text: str,
        start: float | None = None,
        end: float | None = None,
    ) -> int | None:
        """POST an annotation tagged with RELEASE's app, strategy and version; its id or None."""
        labels = [release.data.get(k) for k in ("app", "strategy", "version")]
        body: dict[str, Any] = {
            "time": _ms(release.ts if start is None else start),
            "tags": ["inkdeploy", *tags, *(str(v) for v in labels if v)],
            "text": text,
        }
        if end is not None:
            body["timeEnd"] = _ms(end)
        response = self._request(release.type, "POST", self._api, json=body, headers=self._headers)
        if response is None:
            return None
        try:
            return int(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("grafana annotations to %s: no annotation id in the answer", self.host)
            return None


def _release(event: Event) -> str:
    data = event.data
    words = [str(data[k]) for k in ("app", "version") if data.get(k)]
    if data.get("strategy"):
        words.append(f"({data['strategy']})")
    return " ".join(words) or "release"


class Events:
    """Fan-out for one rollout: redact, then send to every sink and subscriber.

    A sink or subscriber that raises is logged and dropped; emit() itself never raises for it.
    """

    def __init__(
        self, rollout_id: str, sinks: Iterable[EventSink], secrets: Iterable[str] = ()
    ) -> None:
        self.rollout_id = rollout_id
        self._sinks = list(sinks)
        self._secrets = list(secrets)
        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def emit(self, type: str, **data: Any) -> Event:
        event = Event(type, self.rollout_id, time.time(), redact(data, self._secrets))
        with self._lock:
            for sink in list(self._sinks):
                try:
                    sink.emit(event)
                except Exception:
                    log.warning("event sink %r failed; dropped", sink, exc_info=True)
                    self._sinks.remove(sink)
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    log.warning("event subscriber %r failed; dropped", callback, exc_info=True)
                    self._subscribers.remove(callback)
        return event

    def close(self) -> None:
        """Close every sink; background sinks drain their queues at the same time."""
        with self._lock:
            sinks, self._sinks = self._sinks, []
        for sink in sinks:  # every worker drains at once: the waits overlap instead of adding up
            if isinstance(sink, _BackgroundSink):
                sink.finish()
        for sink in sinks:
            try:
                sink.close()
            except Exception:
                log.warning("event sink %r failed to close", sink, exc_info=True)


def sinks_from_notify(notify: Notify, env: Mapping[str, str]) -> tuple[list[EventSink], list[str]]:
    """The webhook and Grafana sinks the policy asks for, and warnings about those left out."""
    sinks: list[EventSink] = [Webhook(str(url)) for url in notify.webhooks]
    warnings: list[str] = []
    if notify.grafana_url is not None:
        token = env.get(notify.grafana_token_env, "")
        grafana_url = str(notify.grafana_url)
        if token:
            sinks.append(GrafanaAnnotations(grafana_url, token, cafile=notify.grafana_ca_file))
        else:
            warnings.append(
                f"Grafana annotations are off: notify.grafana_url is {_host(grafana_url)}"
                f" but the environment variable {notify.grafana_token_env} is not set; put a"
                " Grafana service account token (Editor) in it to annotate rollouts."
            )
    return sinks, warnings
