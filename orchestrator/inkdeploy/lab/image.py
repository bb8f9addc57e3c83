"""The base image every lab host boots from: Debian 12 by debootstrap, built once and cached."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from inkdeploy.errors import LabError
from inkdeploy.lab.layout import cache_root
from inkdeploy.lab.system import require_free_space, run

SUITE = "bookworm"
# What a minimal cloud VM has: systemd, sshd, Python for Ansible (with apt bindings so check
# mode works on a fresh host), iproute2.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "ca-certificates",
)
IMAGE_FORMAT = 1  # bump when the customisation below changes


def mirror() -> str:
    return os.environ.get("INKDEPLOY_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def image_id() -> str:
    key = f"{IMAGE_FORMAT}|{SUITE}|{mirror()}|{','.join(PACKAGES)}"
    return f"{SUITE}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def image_path() -> Path:
    return cache_root() / "images" / image_id() / "rootfs"


def custom_image() -> Path | None:
    """An image of your own (a prepared root filesystem) instead of the built one."""
    value = os.environ.get("INKDEPLOY_LAB_IMAGE")
    return Path(value) if value else None


def _customise(rootfs: Path) -> None:
    """Make the image a template: per-host identity is written into each host's overlay."""
    base = mirror().rstrip("/")
    security = base.rsplit("/", 1)[0] + "/debian-security"
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {base} {SUITE} main\n"
        f"deb {base} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/hostname").unlink(missing_ok=True)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    networkd = wants / "systemd-networkd.service"
    if not networkd.exists():
        networkd.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # A plain VM has no nspawn-specific network defaults; the lab writes a static address.
    for name in ("80-container-host0.network",):
        (rootfs / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/systemd/network" / name).symlink_to("/dev/null")
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)


def ensure_base_image(log: Callable[[str], None] = print) -> Path:
    """Return the cached base image, building it first if needed (about a minute)."""
    custom = custom_image()
    if custom is not None:
        if not (custom / "etc/os-release").exists():
            raise LabError(
                f"INKDEPLOY_LAB_IMAGE={custom} is not a root filesystem (no etc/os-release)."
            )
        return custom
    target = image_path()
    if (target / "etc/os-release").exists():
        return target
    # Labs may come up at once (test lanes run side by side): one builds, the others wait.
    lock = target.parent.parent / ".build.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if (target / "etc/os-release").exists():
            return target
        return _build(target, log)


def _build(target: Path, log: Callable[[str], None]) -> Path:
    require_free_space(target.parent.parent, 1024**3)
    building = target.parent.with_name(target.parent.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    log(f"Building the Debian {SUITE} base image with debootstrap (once; about a minute)...")
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(building / "rootfs"),
                mirror(),
            ],
            timeout=900,
        )
        _customise(building / "rootfs")
    except LabError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise LabError(
            f"Building the base image failed: {exc.message} Check that {mirror()} is reachable "
            "(or set INKDEPLOY_DEBIAN_MIRROR).",
            detail=exc.detail,
        ) from None
    shutil.rmtree(target.parent, ignore_errors=True)
    os.replace(building, target.parent)
    return target
