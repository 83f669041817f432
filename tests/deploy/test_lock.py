"""constraints.txt: every install takes its versions from it, and it keeps pyproject's bounds.

pyproject.toml says which releases are acceptable (lower bounds that leave out known-
vulnerable releases, upper bounds on the platform SDKs' major versions); constraints.txt
pins one release of each, for the runtime and the dev extras. ``make test``/``make demo``
and the container image install with it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    ]


def locked() -> list[Requirement]:
    """Every pin of the lock (a package may be pinned twice, under exclusive markers)."""
    lines = (line.split("#", 1)[0].strip() for line in LOCK.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def pins(name: str) -> list[Version]:
    wanted = canonicalize_name(name)
    found = []
    for pin in locked():
        if canonicalize_name(pin.name) == wanted:
            [spec] = pin.specifier
            found.append(Version(spec.version))
    return found


def test_every_lock_line_is_one_exact_release_without_extras():
    """pip takes no extras in a constraints file, and a range would not lock anything."""
    for pin in locked():
        assert not pin.extras, pin
        assert [s.operator for s in pin.specifier] == ["=="], pin


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_lock_satisfies_pyprojects_bounds(requirement):
    """Each runtime and dev requirement is pinned, inside its bounds (extras pinned too)."""
    found = pins(requirement.name)
    assert found, f"{requirement.name} is not in constraints.txt: run make lock"
    for pinned in found:
        assert requirement.specifier.contains(pinned, prereleases=True), (requirement, pinned)


def test_attack_known_vulnerable_releases_are_outside_the_bounds():
    """The bounds the issue names, and the SDKs' majors, are what pyproject says."""
    bounds = {canonicalize_name(r.name): r.specifier for r in project_requirements()}
    assert not bounds["aiosmtpd"].contains("1.4.4")  # SMTP smuggling, CVE-2024-27305
    assert not bounds["aiosmtpd"].contains("1.4.5")  # STARTTLS injection, CVE-2024-34083
    assert not bounds["aiohttp"].contains("3.14.3")  # pure-Python parser smuggling
    for sdk, next_major in [
        ("slack-bolt", "2.0"),
        ("slack-sdk", "4.0"),
        ("line-bot-sdk", "4.0"),
        ("twilio", "10.0"),
    ]:
        assert not bounds[sdk].contains(next_major), sdk
    assert pins("hiredis"), "redis[hiredis]: the extra's package is locked as well"


def test_this_environment_is_the_locked_one():
    """make test installed from the lock: every locked package present here has its pin."""
    environment = default_environment()
    drift = []
    for pin in locked():
        if pin.marker is not None and not pin.marker.evaluate(environment):
            continue
        try:
            installed = Version(version(pin.name))
        except PackageNotFoundError:
            continue  # e.g. a platform-only dependency
        if not pin.specifier.contains(installed, prereleases=True):
            drift.append(f"{pin.name} {installed} (locked {pin.specifier})")
    assert not drift, "installed versions differ from constraints.txt: " + ", ".join(drift)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_installs_from_the_lock_and_reinstalls_when_it_changes(tmp_path):
    """The install rule depends on the lock and passes it to pip as constraints."""
    venv = tmp_path / "venv"
    target = f"{venv}/bin/.installed"
    database = subprocess.run(  # noqa: S603 - our own Makefile, fixed arguments
        ["make", "-n", "-p", "-B", f"VENV={venv}", target],  # noqa: S607 - make on PATH
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = database.splitlines()
    rules = [line.split(":", 1)[1].split() for line in lines if line.startswith(f"{target}:")]
    assert rules
    assert all("constraints.txt" in prerequisites for prerequisites in rules)
    # The recipe as make runs it (variables expanded), not as written.
    [install] = [line for line in lines if line.startswith(f"{venv}/bin/python") and "-e " in line]
    assert re.search(r"--constraint constraints\.txt .*-e '\.\[dev\]'", install), install


def test_container_image_installs_from_the_lock():
    """The image's build stage resolves with the lock; its runtime fetches nothing else."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert any("constraints.txt" in line.split() for line in copies)
    assert re.search(r"pip wheel [^\n]*--constraint constraints\.txt", dockerfile)
    assert re.search(r"pip install [^\n]*--no-index", dockerfile)
