"""The built wheel, not the editable install: what a deployment installs.

The wheel is built from the project (hatchling, offline) and installed into
a directory of its own; a fresh interpreter without `site` (so the editable
install's path hook never loads) imports spinewatch from there, with only
the dependencies' directory after it on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import spinewatch

ROOT = Path(__file__).resolve().parents[1]
PIP = (sys.executable, "-m", "pip", "--quiet")
DEADLINE_S = 300.0  # building and installing take ~10 s on a loaded 2-core machine


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(  # noqa: S603 - pip on the project, fixed arguments
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        timeout=DEADLINE_S,
        capture_output=True,
    )
    (built,) = out.glob("spinewatch-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(  # noqa: S603 - pip on the wheel just built
        [*PIP, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        timeout=DEADLINE_S,
        capture_output=True,
    )
    return target


def from_wheel(installed: Path, code: str) -> str:
    dependencies = sysconfig.get_paths()["purelib"]  # pydantic & co., not spinewatch
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(installed), dependencies])}
    done = subprocess.run(  # noqa: S603 - a fixed snippet
        [sys.executable, "-S", "-c", code],
        env=env,
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_wheel_holds_one_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"spinewatch"}
    for shipped in ("__init__.py", "__main__.py", "py.typed", "baselines/catalog.toml"):
        assert f"spinewatch/{shipped}" in names
    assert wheel.name.startswith(f"spinewatch-{spinewatch.__version__}-")


def test_import_spinewatch_from_the_installed_wheel_prints_its_version(installed: Path) -> None:
    printed = from_wheel(
        installed, "import spinewatch; print(spinewatch.__version__); print(spinewatch.__file__)"
    )
    version, location = printed.splitlines()
    assert version == spinewatch.__version__
    assert Path(location).is_relative_to(installed)  # not the editable source tree


def test_the_catalog_and_the_cli_work_from_the_installed_wheel(installed: Path) -> None:
    printed = from_wheel(
        installed,
        "from spinewatch.baselines import load_catalog\n"
        "import spinewatch.baselines as b, spinewatch.cli.main as m\n"
        "print(len(load_catalog().baselines), b.__file__, m.__file__)",
    )
    entries, *files = printed.split()
    assert int(entries) > 0
    assert all(Path(f).is_relative_to(installed) for f in files)
