"""The wheel as the image builds it: SPDX license, the LICENSE file, the default mappings,
the connector's package data, and no sandbox (neither its code nor its dependencies).

Built like the Dockerfile's build stage (``pip wheel --no-deps`` on a copy of what it
copies), and once from the whole repository (where sandbox/ sits beside connector/); the
build's own output is read for deprecation warnings, which ``pip install`` would show
every user.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def dockerfile_copies() -> list[str]:
    """What the build stage copies into /src before building the wheel."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    build_stage = text.split("FROM ", 2)[1]
    copied: list[str] = []
    for line in build_stage.splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    return copied


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    src = tmp_path_factory.mktemp("src")
    for name in dockerfile_copies():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel, done.stdout + done.stderr


def test_the_build_warns_of_nothing_deprecated(built: tuple[Path, str]) -> None:
    _, output = built
    assert "DeprecationWarning" not in output, output[-3000:]


def test_the_license_is_an_spdx_expression_with_its_file(built: tuple[Path, str]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = zf.read(metadata).decode()
        (license_file,) = [n for n in names if n.endswith("/licenses/LICENSE")]
        assert "Apache License" in zf.read(license_file).decode()
    assert "License-Expression: Apache-2.0" in text.splitlines()
    assert not [line for line in text.splitlines() if line.startswith("License: ")]


def test_the_default_mappings_and_their_schema_are_in_the_wheel(built: tuple[Path, str]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        for name in ("salesforce.yaml", "dynamics.yaml", "mapping.schema.json"):
            shipped = zf.read(f"connector/mappings_default/{name}")
            assert shipped == (ROOT / "mappings" / name).read_bytes(), name


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        (metadata,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(metadata).decode().splitlines()


def test_the_connectors_package_data_are_in_the_wheel(built: tuple[Path, str]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for name in (
        "connector/py.typed",
        "connector/state/migrations/script.py.mako",
        "connector/state/migrations/versions/0001_initial.py",
        "connector/state/migrations/versions/0004_dead_letter_fingerprint.py",
        "connector/console/templates/base.html",
        "connector/console/static/console.css",
    ):
        assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


SANDBOX_ONLY = ("starlette", "uvicorn", "trustme")


def test_the_wheel_requires_the_sandboxs_dependencies_only_for_its_extra(
    built: tuple[Path, str],
) -> None:
    wheel, _ = built
    requires = [line for line in _metadata(wheel) if line.startswith("Requires-Dist: ")]
    for name in SANDBOX_ONLY:
        mine = [line for line in requires if line.split()[1].startswith(name)]
        # the sandbox extra's, and the dev extra's (which pulls the sandbox's in): never
        # a dependency of the connector itself
        extras = sorted(line.split("; ", 1)[1] if "; " in line else "" for line in mine)
        assert extras == ["extra == 'dev'", "extra == 'sandbox'"], mine
    assert "Provides-Extra: sandbox" in _metadata(wheel)


@pytest.fixture(scope="module")
def built_from_the_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a plain ``pip wheel .`` in a clone: sandbox/ is right there."""
    src = tmp_path_factory.mktemp("clone") / "repo"
    done = subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr[-300:]}")
    # what is not committed yet too (the test runs on a work tree)
    for name in ("pyproject.toml", "connector", "sandbox", "mappings"):
        path = ROOT / name
        shutil.rmtree(src / name, ignore_errors=True)
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("repo-wheels")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def test_a_wheel_built_from_the_repository_holds_no_sandbox_code(
    built_from_the_repository: Path,
) -> None:
    with zipfile.ZipFile(built_from_the_repository) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"connector"}, tops
    assert not [n for n in names if "sandbox" in n.split("/")[-2:-1] or "/sandbox/" in n]
    assert not [n for n in names if n.startswith("connector/") and "sandbox" in n], names
