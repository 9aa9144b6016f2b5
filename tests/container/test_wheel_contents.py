"""The wheel as the image builds it: SPDX license, the LICENSE file, the default mappings.

Built like the Dockerfile's build stage (``pip wheel --no-deps`` on a copy of what it
copies); the build's own output is read for setuptools' deprecation warnings, which
``pip install`` would show every user.
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
    assert "SetuptoolsDeprecationWarning" not in output, output[-3000:]


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
