"""The package layout: runtime/ is `edgeloop`, drivers/ is `edgeloop.drivers`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import REPO

FOLDERS = {"edgeloop": "runtime", "edgeloop.drivers": "drivers", "edgeloop.examples": "config"}


def _package_folders() -> set[str]:
    found = set()
    for package, folder in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *relative.parts]))
    return found


def test_pyproject_lists_every_package_folder() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _package_folders()
    assert setuptools["package-dir"] == FOLDERS


def test_wheel_contains_the_mapped_packages_and_the_demo_config(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("edgeloop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "edgeloop/__init__.py",
        "edgeloop/world.py",
        "edgeloop/py.typed",
        "edgeloop/realtime/control_loop.py",
        "edgeloop/drivers/__init__.py",
        "edgeloop/examples/demo.yaml",
        "edgeloop/web/static/index.html",  # the dashboard: no CDN, so it is all in here
        "edgeloop/web/static/dashboard.js",
        "edgeloop/web/static/uPlot.iife.min.js",
        "edgeloop/web/static/uPlot.LICENSE.txt",
    ):
        assert expected in names
    assert not any(n.startswith(("runtime/", "drivers/", "tests/")) for n in names)
