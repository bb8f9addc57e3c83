"""Write small files on a host, each only when its content or mode differs, atomically (a
temporary file in the same directory renamed over the old one, so a reader sees the old file or
the new one, never half of it). The orchestrator's fast path for what rollout/record.yml and the
Prometheus targets of stop-slot.yml write (inkdeploy/remote.py ships this file over SSH;
standard library only, Python 3.9+ as on Debian 11 and later).

params: files, a list of {path, content, mode ("0644"), dir_mode ("0755", for a missing
directory)}. Returns changed: the paths written.
"""

import os
import tempfile


def _same(path, content, mode):
    try:
        with open(path, "rb") as fh:
            return fh.read() == content and os.stat(path).st_mode & 0o7777 == mode
    except FileNotFoundError:
        return False


def run(params):
    changed = []
    for spec in params["files"]:
        path, content = spec["path"], spec["content"].encode()
        mode = int(spec.get("mode", "0644"), 8)
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, int(spec.get("dir_mode", "0755"), 8))
        if _same(path, content, mode):
            continue
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        try:
            os.write(fd, content)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        changed.append(path)
    return {"changed": changed}
