"""Point a worker host's Celery link at a release that is already installed: the first half of
the orchestrator's fast path for a rollout's Celery step (inkdeploy/remote.py ships this file
over SSH; standard library only, Python 3.9+ as on Debian 11 and later). The restart that
follows is `inkdeploy workers restart`'s (warm shutdown, then a ping through the broker).

It does what the celery role does before its handler restarts the workers
(roles/celery/tasks/main.yml, roles/app/tasks/prune.yml):
  1. change nothing and say so when the release is not installed (no .installed marker): the
     playbook installs it then;
  2. point ROOT/APP/slots/celery at ROOT/APP/releases/VERSION (a new link renamed over the old
     one, so the link is never missing) and add the role's line to the release log;
  3. remove old releases as the role does: keep the KEEP newest (by modification time), never
     one that a slot link points to or that KEEP_VERSIONS names.
"""

import contextlib
import datetime
import os
import shutil


def _log(path, line):
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    if created:
        with contextlib.suppress(LookupError, OSError):
            shutil.chown(path, "root", "adm")


def _prune(home, keep, keep_versions):
    releases_dir = os.path.join(home, "releases")
    slots_dir = os.path.join(home, "slots")
    in_use = set()
    for name in os.listdir(slots_dir) if os.path.isdir(slots_dir) else []:
        link = os.path.join(slots_dir, name)
        if os.path.islink(link):
            in_use.add(os.path.realpath(link))
    releases = [
        os.path.join(releases_dir, name)
        for name in os.listdir(releases_dir)
        if os.path.isdir(os.path.join(releases_dir, name))
        and not os.path.islink(os.path.join(releases_dir, name))
    ]
    releases.sort(key=os.path.getmtime, reverse=True)
    removed = []
    for path in releases[keep:]:
        if os.path.realpath(path) in in_use or os.path.basename(path) in keep_versions:
            continue
        shutil.rmtree(path)
        removed.append(os.path.basename(path))
    return sorted(removed)


def run(params):
    """PARAMS: root, app, version, keep (releases kept), keep_versions, release_log, by."""
    home = os.path.join(params["root"], params["app"])
    release = os.path.join(home, "releases", params["version"])
    if not os.path.isfile(os.path.join(release, ".installed")):
        return {"changed": False, "installed": False}
    link = os.path.join(home, "slots", "celery")
    previous = os.readlink(link) if os.path.islink(link) else None
    changed = previous != release
    if changed:
        fresh = link + ".inkdeploy-new"
        if os.path.lexists(fresh):
            os.unlink(fresh)
        os.symlink(release, fresh)
        os.replace(fresh, link)
        if os.path.isdir(os.path.dirname(params["release_log"])):
            # datetime.UTC is Python 3.11; the hosts may run 3.9
            now = datetime.datetime.now(datetime.timezone.utc).isoformat()  # noqa: UP017
            before = os.path.basename(previous) if previous else "none"
            _log(params["release_log"], f"{now} slot=celery version={params['version']} "
                                        f"previous={before} by={params['by']}\n")  # fmt: skip
    pruned = _prune(home, int(params["keep"]), set(params.get("keep_versions") or ()))
    return {
        "changed": changed or bool(pruned),
        "installed": True,
        "switched": changed,
        "previous": os.path.basename(previous) if previous else None,
        "pruned": pruned,
    }
