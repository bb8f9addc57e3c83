"""What the verify steps of the elk and grafana scenarios share about their package source: the
scenario's settings (molecule.yml), the local repository the controller serves
(molecule/_shared/local_repo_serve.yml) and the skip that names it when a package is missing.

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
    from vendor_repo import VendorRepo, scenario_vars
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

DEBS_DIR = os.environ.get("INKDEPLOY_VENDOR_DEBS") or "/var/cache/inkdeploy/vendor-debs"
REPO_PORT = os.environ.get("INKDEPLOY_VENDOR_REPO_PORT") or "8700"


def scenario_vars(test_file: str) -> dict[str, Any]:
    """group_vars.all of the molecule.yml of the scenario TEST_FILE (SCENARIO/tests/X.py) is in."""
    molecule_yml = Path(test_file).resolve().parents[1] / "molecule.yml"
    return yaml.safe_load(molecule_yml.read_text())["provisioner"]["inventory"]["group_vars"]["all"]


class VendorRepo:
    """The local repository as the lab hosts reach it: at their gateway (where their apt proxy
    listens), port INKDEPLOY_VENDOR_REPO_PORT."""

    def __init__(self, host_vars: dict[str, Any], settings: dict[str, Any]):
        proxy = host_vars["common_apt_proxy"]
        self.gateway = proxy.split("//", 1)[1].rsplit(":", 1)[0]
        self.port = REPO_PORT
        self.url = f"http://{self.gateway}:{REPO_PORT}/"
        self.source = settings["inkdeploy_package_source"]

    def require(self, host, name: str, package: str, debs: str) -> None:
        """Skip, naming the package source, unless the role could install PACKAGE on host NAME.
        DEBS says which .deb files would be needed ("the Elastic .deb files")."""
        if not host.package(package).is_installed:
            pytest.skip(
                f"{package} is not installed on {name}: package source {self.source!r} "
                f"({self.url}, serving {DEBS_DIR}) has no {package} package, so the role ended "
                f"its play before the install (inkdeploy_package_unavailable: skip). Put {debs} "
                f"into {DEBS_DIR} (docs/observability-grafana-elk.md) to run this check."
            )
