"""deps/debian-packages.txt is the one list of system packages: `make test` and .ci/run
install from it, and `deps/install` installs only what is missing or says how to."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

PACKAGES = REPO / "deps" / "debian-packages.txt"
INSTALL = REPO / "deps" / "install"
CI_RUN = REPO / ".ci" / "run"
# What .ci/run installs before make can run: not the project's packages, make's own.
BOOTSTRAP = {"make", "python3-venv"}


def listed() -> dict[str, tuple[str, str]]:
    """package -> (the command or file that proves it, what needs it)."""
    packages = {}
    for line in PACKAGES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields, _, why = line.partition("#")
        package, probe = fields.split()
        packages[package] = (probe, why.strip())
    return packages


def install(packages: str, *args: str, user: str | None = None) -> str:
    """deps/install with ``packages`` as its list; its stderr, after asserting exit 1 or 0."""
    command = [str(INSTALL), *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    result = subprocess.run(
        command,
        check=False,
        input=packages,
        env={**os.environ, "DEPS_FILE": "-"},  # stdin: readable by any user
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stderr if result.returncode else ""


def test_every_listed_package_says_what_proves_it_and_what_needs_it() -> None:
    packages = listed()
    assert {"rt-tests", "systemd"} <= packages.keys()
    for package, (probe, why) in packages.items():
        assert probe, package
        assert why, f"{package}: say which feature needs it"


def test_ci_run_installs_the_project_packages_only_through_make_deps() -> None:
    script = CI_RUN.read_text()
    steps = re.findall(r"^make (\w+)$", script, re.MULTILINE)
    assert steps.index("deps") < steps.index("test"), steps
    names = set(re.findall(r"[\w.+-]+", script))
    assert not names & listed().keys(), "name them in deps/debian-packages.txt only"
    assert not names & {probe for probe, _ in listed().values()}, "probes live in the list too"
    installed = set(re.findall(r"need_apt\+=\(([\w.+-]+)\)", script))
    assert installed == BOOTSTRAP


def test_make_test_installs_the_system_packages_before_running_the_suite() -> None:
    commands = subprocess.run(
        ["make", "-n", "-C", str(REPO), "test"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    runs = [at for at, line in enumerate(commands) if line.strip() == "deps/install"]
    tests = [at for at, line in enumerate(commands) if "pytest" in line]
    assert runs and tests and runs[0] < tests[0], commands


def test_the_machine_has_every_listed_package() -> None:
    # make test ran deps/install; this fails if the list and the machine disagree.
    result = subprocess.run([str(INSTALL), "--check"], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_missing_package_is_named_with_the_apt_get_line() -> None:
    text = "sh /bin/sh # a file\nedgeloop-no-such-package edgeloop-no-such-command # a test\n"
    said = install(text, "--check")
    assert "sudo apt-get install -y edgeloop-no-such-package\n" in said
    assert "missing system packages" in said


def test_nothing_to_do_when_every_probe_is_found() -> None:
    assert install("coreutils ls # a command\nsh /bin/sh # a file\n") == ""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_root_it_prints_the_line_instead_of_installing() -> None:
    user = None if os.getuid() != 0 else "65534"
    said = install("edgeloop-no-such-package no-such-command # a test\n", user=user)
    assert "sudo apt-get install -y edgeloop-no-such-package\n" in said
    assert "installing" not in said
