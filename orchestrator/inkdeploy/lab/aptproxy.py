"""apt-cacher-ng on the lab's bridge address: the only way lab hosts reach Debian packages."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from inkdeploy.errors import LabError
from inkdeploy.lab.image import SUITE, mirror
from inkdeploy.lab.inventory import APT_PROXY_PORT
from inkdeploy.lab.layout import LabLayout
from inkdeploy.lab.procs import pid_alive, read_pid
from inkdeploy.remote import tcp_alive


def _config(layout: LabLayout, gateway: ipaddress.IPv4Address) -> str:
    upstream = mirror().rstrip("/")
    host = urlparse(upstream).netloc
    return f"""# Written by inkdeploy lab for lab '{layout.name}'.
CacheDir: {layout.apt_cache_dir}
LogDir: {layout.apt_proxy_dir / "log"}
SupportDir: /usr/lib/apt-cacher-ng
PidFile: {layout.apt_proxy_dir / "pid"}
BindAddress: {gateway}
Port: {APT_PROXY_PORT}
ForeGround: 1
ExThreshold: 4
# Index files count as fresh for an hour (default 27 s), and `lab up` refreshes them itself
# first (warm_indexes): when many hosts ask for the same stale InRelease in the same second,
# apt-cacher-ng 3.7 fails one of them ("Failure to move file ... out of the way: File exists")
# and that host's apt hangs on the half-closed connection. A lab lives for a test run.
FreshIndexMaxAge: 3600
Remap-debrep: file:deb_mirror*.gz /debian ; {upstream}/
Remap-secdeb: security.debian.org deb.debian.org/debian-security {host}/debian-security \
/debian-security ; {upstream.rsplit("/", 1)[0]}/debian-security
"""


def _answers(gateway: ipaddress.IPv4Address) -> bool:
    return tcp_alive(str(gateway), APT_PROXY_PORT, 0.5)


def ensure_apt_proxy(layout: LabLayout, gateway: ipaddress.IPv4Address) -> None:
    conf_dir = layout.apt_proxy_dir / "conf"
    pid_file = layout.apt_proxy_dir / "pid"
    pid = read_pid(pid_file)
    if pid and pid_alive(pid, "apt-cacher-ng") and _answers(gateway):
        warm_indexes(gateway)
        return
    stop_apt_proxy(layout)
    conf_dir.mkdir(parents=True, exist_ok=True)
    (layout.apt_proxy_dir / "log").mkdir(exist_ok=True)
    layout.apt_cache_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "acng.conf").write_text(_config(layout, gateway))
    log = (layout.apt_proxy_dir / "log" / "daemon.log").open("ab")
    proc = subprocess.Popen(
        ["apt-cacher-ng", "-c", str(conf_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _answers(gateway):
            warm_indexes(gateway)
            return
        time.sleep(0.1)
    tail = _tail(layout.apt_proxy_dir / "log" / "daemon.log")
    stop_apt_proxy(layout)
    raise LabError(
        f"apt-cacher-ng did not start on {gateway}:{APT_PROXY_PORT}; see its log below.",
        detail=tail,
    )


def warm_indexes(gateway: ipaddress.IPv4Address, timeout: float = 30) -> None:
    """Fetch the suites' InRelease files through the cache, one at a time, so that the hosts'
    first `apt-get update` finds them fresh instead of racing each other to refresh them.
    Best effort: a failure here only means the hosts fetch them themselves."""
    base = mirror().rstrip("/")
    security = base.rsplit("/", 1)[0] + "/debian-security"
    urls = [  # the suites of the hosts' sources.list (image._customise)
        f"{base}/dists/{SUITE}/InRelease",
        f"{base}/dists/{SUITE}-updates/InRelease",
        f"{security}/dists/{SUITE}-security/InRelease",
    ]
    proxy = urllib.request.ProxyHandler({"http": f"http://{gateway}:{APT_PROXY_PORT}"})
    opener = urllib.request.build_opener(proxy)
    for url in urls:
        try:
            with opener.open(url, timeout=timeout) as response:
                response.read()
        except OSError:
            continue


def stop_apt_proxy(layout: LabLayout) -> None:
    pid_file = layout.apt_proxy_dir / "pid"
    pid = read_pid(pid_file)
    if pid and pid_alive(pid, "apt-cacher-ng"):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_alive(pid, "apt-cacher-ng"):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
