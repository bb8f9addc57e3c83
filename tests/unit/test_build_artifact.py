import zipfile

import pytest

from inkdeploy.build.artifact import (
    BuildError,
    Fault,
    artifact_name,
    check_version,
    parse_error_rate,
    read_project,
)
from inkdeploy.build.runtime import write_runtime_wheel


def project(tmp_path, tool: str = "", name: str = "shop"):
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n{tool}')
    return tmp_path


GOOD_TOOL = '[tool.inkdeploy]\nsettings = "shop.settings"\nwsgi = "shop.wsgi:application"\n'


def test_project_config_comes_from_tool_inkdeploy(tmp_path):
    cfg = read_project(project(tmp_path, GOOD_TOOL))
    assert (cfg.name, cfg.settings, cfg.wsgi, cfg.celery_app) == (
        "shop", "shop.settings", "shop.wsgi:application", None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("tool", "fragment"),
    [
        ("", "has no [tool.inkdeploy] table"),
        ('[tool.inkdeploy]\nsettings = "shop settings"\nwsgi = "a:b"\n', "not a module path"),
        ('[tool.inkdeploy]\nsettings = "s"\nwsgi = "shop.wsgi"\n', "must look like"),
        ("[tool.inkdeploy\n", "not valid TOML"),
    ],
)
def test_bad_projects_are_explained(tmp_path, tool, fragment):
    with pytest.raises(BuildError) as err:
        read_project(project(tmp_path, tool))
    assert fragment in err.value.message


def test_a_directory_without_pyproject_is_refused(tmp_path):
    with pytest.raises(BuildError, match=r"has no pyproject\.toml"):
        read_project(tmp_path)


def test_versions_and_names():
    assert check_version("2026.11.21-1") == "2026.11.21-1"
    for bad in ("", "-1", "1 2", "a/b", "x" * 65):
        with pytest.raises(BuildError):
            check_version(bad)
    assert artifact_name("inkapp", "1.2.3") == "inkapp-1.2.3.tar.gz"


def test_error_rates():
    assert parse_error_rate("10%") == pytest.approx(0.1)
    assert parse_error_rate("0.25") == 0.25
    for bad in ("150%", "lots", "2"):
        with pytest.raises(BuildError):
            parse_error_rate(bad)


def test_runtime_wheel_is_a_valid_wheel_carrying_version_and_fault(tmp_path):
    wheel = write_runtime_wheel(tmp_path, "shop", "3.1.4", "shop.settings", Fault(error_rate=0.2))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        init = zf.read("inkdeploy_release/__init__.py").decode()
        settings = zf.read("inkdeploy_release/settings.py").decode()
        record = zf.read("inkdeploy_release-1.dist-info/RECORD").decode()
    assert {
        "inkdeploy_release/middleware.py",
        "inkdeploy_release/gunicorn_logging.py",
        "inkdeploy_release-1.dist-info/WHEEL",
    } <= names
    assert "VERSION = '3.1.4'" in init and "'error_rate': 0.2" in init
    assert "from shop.settings import *" in settings
    assert all(line.split(",")[0] in names for line in record.splitlines())
    compile(settings, "settings.py", "exec")
    compile(init, "__init__.py", "exec")
