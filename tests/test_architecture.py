"""The package's shape: rooms, and imports that point one way.

The contracts live in pyproject.toml ([tool.importlinter]) and are checked
by import-linter's own command line, as a developer would run it. Each is
also shown to fail: on a copy of the package with one bad import added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import spinewatch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(spinewatch.__file__).resolve().parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
DEADLINE_S = 120.0


def lint_imports(project: Path, source_root: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first, so the copy is the `spinewatch` that grimp finds
    # (the editable install's path comes after it).
    env = os.environ | {"PYTHONPATH": str(source_root)}
    return subprocess.run(  # noqa: S603 - the project's own tool, fixed arguments
        [str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def copy_with(tmp: Path, module: str, extra_import: str) -> Path:
    """A copy of the project's config and package, with one import added to `module`."""
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    shutil.copytree(PACKAGE, tmp / "services" / "spinewatch")
    path = tmp / "services" / "spinewatch" / (module.replace(".", "/") + ".py")
    text = path.read_text(encoding="utf-8")
    marker = "from __future__ import annotations\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + extra_import + "\n", 1), encoding="utf-8")
    return tmp / "services"


def test_the_import_contracts_hold() -> None:
    done = lint_imports(ROOT, PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_a_domain_module_importing_faust_breaks_the_purity_contract(tmp_path: Path) -> None:
    source = copy_with(tmp_path, "domain.drift.cusum", "import faust  # noqa: F401")
    done = lint_imports(tmp_path, source)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "spinewatch.domain is not allowed to import faust" in done.stdout
    assert "spinewatch.domain.drift.cusum -> faust" in done.stdout


def test_a_domain_module_importing_a_service_breaks_the_layers(tmp_path: Path) -> None:
    source = copy_with(
        tmp_path, "domain.outcomes.records", "import spinewatch.engine.outcomes  # noqa: F401"
    )
    done = lint_imports(tmp_path, source)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "spinewatch.domain.outcomes.records -> spinewatch.engine.outcomes" in done.stdout


def test_the_package_root_holds_only_init_main_and_the_exception_tree() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == {"__init__.py", "__main__.py", "errors.py"}
    assert (PACKAGE / "py.typed").is_file()
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    # Every room is a regular package (no namespace half-packages).
    assert all((PACKAGE / room / "__init__.py").is_file() for room in rooms), rooms
