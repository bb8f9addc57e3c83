"""Build the demo app for real (pip fetches from PyPI on the controller), install the artifact
offline the way hosts do, and serve requests through it."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from inkdeploy.build.artifact import Fault
from inkdeploy.build.builder import build, read_manifest

pytestmark = pytest.mark.build
INKAPP = Path(__file__).resolve().parents[2] / "examples" / "inkapp"

SERVE = r"""
import json, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
c = Client()
codes = [c.get("/").status_code for _ in range(300)]
health = [c.get("/healthz") for _ in range(20)]
metrics = c.get("/metrics").content.decode()
print(json.dumps({
    "errors": codes.count(500), "ok": codes.count(200),
    "health": sorted({h.status_code for h in health}),
    "version_header": health[0]["X-App-Version"],
    "health_version": health[0].json()["version"],
    "metric_500": [l for l in metrics.splitlines()
                   if 'status="500"' in l and l.startswith("http_requests_total")],
}))
"""


def install(artifact: Path, where: Path) -> Path:
    manifest = read_manifest(artifact)
    with tarfile.open(artifact) as tar:
        tar.extractall(where, filter="data")
    venv = where / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    wheels = where / f"{manifest.name}-{manifest.version}" / "wheels"
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--no-index", "--find-links", str(wheels),
         manifest.requirement, "inkdeploy_release"],
        check=True,
    )  # fmt: skip
    return venv


def serve(venv: Path, tmp: Path, settings: str) -> dict:
    env = {
        "DJANGO_SETTINGS_MODULE": settings, "INKAPP_SECRET_KEY": "test",
        "INKAPP_DB_ENGINE": "sqlite", "INKAPP_DB_NAME": str(tmp / "db.sqlite3"),
        "INKAPP_CACHE": "locmem", "INKAPP_CELERY_EAGER": "1", "INKAPP_ALLOWED_HOSTS": "testserver",
        "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    proc = subprocess.run(
        [str(venv / "bin/python"), "-c", SERVE], capture_output=True, text=True, env=env, cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_bad_build_fails_a_share_of_requests_and_its_own_metrics_show_it(tmp_path):
    artifact, manifest = build(INKAPP, "2.0.0-bad", tmp_path / "dist", Fault(error_rate=0.3))
    assert manifest.settings == "inkdeploy_release.settings"
    assert manifest.celery_app == "inkapp.celery_app:app"
    assert len(manifest.wheels) > 10 and "inkdeploy_release-1-py3-none-any.whl" in manifest.wheels
    # Resolved for the hosts' interpreter, with what only that version needs.
    host_python = subprocess.run(
        ["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert manifest.python == host_python
    venv = install(artifact, tmp_path / "host")
    seen = serve(venv, tmp_path, manifest.settings)
    assert 40 <= seen["errors"] <= 140, seen  # 30% of 300, with room for chance
    assert seen["errors"] + seen["ok"] == 300
    assert seen["health"] == [200]  # the health check stays green: canary analysis must catch it
    assert seen["version_header"] == seen["health_version"] == "2.0.0-bad"
    assert seen["metric_500"] and 'version="2.0.0-bad"' in seen["metric_500"][0]


def test_a_good_build_serves_every_request(tmp_path):
    artifact, manifest = build(INKAPP, "2.0.0", tmp_path / "dist")
    venv = install(artifact, tmp_path / "host")
    seen = serve(venv, tmp_path, manifest.settings)
    assert seen["errors"] == 0 and seen["ok"] == 300
    assert seen["version_header"] == "2.0.0"


def test_a_release_is_built_once(tmp_path):
    from inkdeploy.build.artifact import BuildError

    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "inkapp-1.0.0.tar.gz").write_text("already here")
    with pytest.raises(BuildError, match="already exists; a release version is built once"):
        build(INKAPP, "1.0.0", tmp_path / "dist")
