"""Build an artifact: pip wheels for the project and every dependency, plus inkdeploy_release."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from inkdeploy.build.artifact import (
    BuildError,
    Fault,
    Manifest,
    artifact_name,
    check_version,
    read_project,
)
from inkdeploy.build.runtime import DIST, write_runtime_wheel

LOCK_FILES = ("requirements.lock", "constraints.txt")
# Wheels are resolved by the interpreter the hosts run: dependency markers can depend on the
# full Python version (redis needs async-timeout below 3.11.3), so resolving with another 3.11
# gives a set that does not install on the hosts. Debian 12 controllers have the same
# /usr/bin/python3 as Debian 12 hosts.
DEFAULT_TARGET_PYTHON = Path("/usr/bin/python3")


def _target_python(python: Path | None) -> Path:
    chosen = python or (DEFAULT_TARGET_PYTHON if DEFAULT_TARGET_PYTHON.exists() else None)
    if chosen is None:
        raise BuildError(
            "No /usr/bin/python3 to resolve wheels with; give --python with the interpreter "
            "your hosts run (the same version, to the patch level)."
        )
    if not chosen.exists():
        raise BuildError(f"{chosen} does not exist; give --python the interpreter your hosts run.")
    return chosen


def _build_env(python: Path, where: Path) -> tuple[Path, str]:
    """A throwaway virtualenv of the target interpreter; returns its python and full version."""
    proc = subprocess.run([str(python), "-m", "venv", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"Could not create a virtualenv with {python}; install python3-venv.",
            detail=proc.stderr[-2000:],
        )
    venv_python = where / "bin" / "python"
    version = subprocess.run(
        [str(venv_python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return venv_python, version


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(
    project: Path,
    version: str,
    out: Path,
    fault: Fault | None = None,
    force: bool = False,
    python: Path | None = None,
) -> tuple[Path, Manifest]:
    project = project.resolve()
    cfg = read_project(project)
    check_version(version)
    fault = fault or Fault()
    target = out / artifact_name(cfg.name, version)
    if target.exists() and not force:
        raise BuildError(
            f"{target} already exists; a release version is built once. Use a new version, "
            "or --force to replace it."
        )
    out.mkdir(parents=True, exist_ok=True)
    target_python = _target_python(python)
    with tempfile.TemporaryDirectory(prefix="inkdeploy-build-") as tmp:
        build_python, python_version = _build_env(target_python, Path(tmp) / "buildenv")
        top = Path(tmp) / f"{cfg.name}-{version}"
        wheels = top / "wheels"
        wheels.mkdir(parents=True)
        # Build from a copy: setuptools builds in the source tree and would leave build/ there.
        source = Path(tmp) / "source"
        shutil.copytree(
            project, source, ignore=shutil.ignore_patterns(
                ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "*.sqlite3"
            ),
        )  # fmt: skip
        cmd = [str(build_python), "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels)]
        lock = next((project / f for f in LOCK_FILES if (project / f).is_file()), None)
        if lock is not None:
            cmd += ["--constraint", str(lock)]
        # Gunicorn serves every release, whether or not the project lists it.
        proc = subprocess.run([*cmd, str(source), "gunicorn"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(
                f"pip could not build wheels for {cfg.name}; its output ends with the reason.",
                detail=(proc.stderr or proc.stdout)[-3000:],
            )
        write_runtime_wheel(wheels, cfg.name, version, cfg.settings, fault)
        manifest = Manifest(
            name=cfg.name,
            version=version,
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            python=python_version,
            project_settings=cfg.settings,
            wsgi=cfg.wsgi,
            celery_app=cfg.celery_app,
            requirement=cfg.name,
            fault=fault,
            wheels={w.name: _sha256(w) for w in sorted(wheels.glob("*.whl"))},
        )
        (top / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(top, arcname=top.name)
        partial.replace(target)
    return target, manifest


def read_manifest(artifact: Path) -> Manifest:
    with tarfile.open(artifact) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/manifest.json")), None)
        if member is None:
            raise BuildError(
                f"{artifact} has no manifest.json; it was not made by inkdeploy build."
            )
        data = tar.extractfile(member)
        if data is None:
            raise BuildError(f"{artifact}: manifest.json is not a regular file.")
        return Manifest.model_validate(json.loads(data.read()))


def verify_offline_install(artifact: Path, python: Path | None = None) -> str:
    """Install the artifact into a throwaway virtualenv with no index, as hosts do; return the
    installed release version reported by inkdeploy_release."""
    manifest = read_manifest(artifact)
    target_python = _target_python(python)
    with tempfile.TemporaryDirectory(prefix="inkdeploy-verify-") as tmp:
        with tarfile.open(artifact) as tar:
            tar.extractall(tmp, filter="data")
        top = Path(tmp) / f"{manifest.name}-{manifest.version}"
        for name, digest in manifest.wheels.items():
            if _sha256(top / "wheels" / name) != digest:
                raise BuildError(f"{name} in {artifact} does not match its checksum.")
        venv = Path(tmp) / "venv"
        subprocess.run([str(target_python), "-m", "venv", str(venv)], check=True)
        proc = subprocess.run(
            [str(venv / "bin/pip"), "install", "--quiet", "--no-index", "--find-links",
             str(top / "wheels"), manifest.requirement, DIST],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BuildError(
                f"{artifact} does not install offline; pip says why.", detail=proc.stderr[-3000:]
            )
        out = subprocess.run(
            [str(venv / "bin/python"), "-c", "import inkdeploy_release as r; print(r.VERSION)"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        shutil.rmtree(venv, ignore_errors=True)
        return out.stdout.strip()
