"""Run Python on the worker host inside the Celery release, with the app's environment file."""

import json
import shlex

PRELUDE = r"""
import json, os, time
for line in open("/etc/inkapp/env"):
    key, sep, value = line.rstrip("\n").partition("=")
    if sep and not key.startswith("#"):
        os.environ[key] = value
import django
django.setup()
from django.core.cache import cache
from inkapp import tasks
"""


def run(host, code: str) -> dict:
    """Execute PRELUDE + code (which prints one JSON line) with the release's Python."""
    script = PRELUDE + code
    out = host.check_output(
        f"printf %s {shlex.quote(script)} | /srv/inkapp/slots/celery/venv/bin/python -"
    )
    return json.loads(out.strip().splitlines()[-1])
