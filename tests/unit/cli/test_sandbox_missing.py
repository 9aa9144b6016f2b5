"""``connector sandbox`` without the sandbox installed: how to install it, no traceback."""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

import pytest
from typer.testing import CliRunner

from connector.cli import ExitCode, app


class _NoSandbox(MetaPathFinder):
    """Finds no ``sandbox`` package, as in an install from the wheel."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "sandbox":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _invoke() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sandbox", "--port", "0"])
    return result.exit_code, " ".join(result.output.split())


def test_without_the_sandbox_package_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a wheel install: no sandbox package beside the connector
    for name in list(sys.modules):
        if name == "sandbox" or name.startswith("sandbox."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoSandbox(), *sys.meta_path])
    code, output = _invoke()
    assert code == ExitCode.BAD_CONFIG, output
    assert "the sandbox is not installed (no module 'sandbox'" in output
    assert "pip install -e '.[sandbox]'" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("dependency", ["uvicorn", "trustme", "starlette"])
def test_without_the_sandbox_extra_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, dependency: str
) -> None:
    # the package is there, the extra's dependencies are not: its modules load afresh
    for name in list(sys.modules):
        if name == "sandbox" or name.startswith("sandbox."):
            monkeypatch.delitem(sys.modules, name)
    for name in list(sys.modules):
        if name == dependency or name.startswith(dependency + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, dependency, None)
    code, output = _invoke()
    assert code == ExitCode.BAD_CONFIG, output
    assert f"no module '{dependency}'" in output
    assert "pip install -e '.[sandbox]'" in output
    assert "Traceback" not in output


def test_another_import_error_is_not_taken_for_a_missing_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):
        if name == "sandbox.server":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sandbox.app", None)  # a module of the sandbox itself
    result = CliRunner().invoke(app, ["sandbox", "--port", "0"])
    assert isinstance(result.exception, ImportError)
