"""The image's install steps, without Docker: a wheel in a clean venv, run as a non-root user.

Follows the Dockerfile: build the wheel from a copy of pyproject.toml, README.md,
LICENSE, connector/ and mappings/ (`pip wheel --no-deps`), install it with the ``postgres``
extra into a fresh virtual environment (which then holds none of the sandbox's
dependencies, and whose `connector sandbox` says how to install it), copy mappings/ and
config/; then, like the sandbox stage, the same wheel with the ``sandbox`` extra in a
second environment, sandbox/ beside it. As an unprivileged user, start the sandbox from
the second and `connector run` from the first (config/compose-sandbox.yaml pointed at
the sandbox, a 5 s interval), watch two cycles through /healthz, /readyz and /metrics,
and stop it with SIGTERM (exit 0). A non-editable install is what catches package data
missing from the wheel (the Alembic migrations).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

ROOT = Path(__file__).parents[2]
USER = "connector-smoke"
CONN = "compose-salesforce"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(290)]


def run(cmd: list[str], **kwargs: Any) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"


def non_root_user() -> pwd.struct_passwd:
    """The current user when not root; else a throwaway system user (created if needed)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("running as root without `useradd`: cannot create a non-root user")
    run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER])
    return pwd.getpwnam(USER)


def others_can_run(path: Path) -> bool:
    """Whether a user other than the owner can reach and execute ``path``."""
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & 0o001:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in real.parents)


def base_python(user: pwd.struct_passwd) -> str:
    """A Python 3.11+ the user can run (like the image's /usr/local/bin/python).

    The test's own interpreter may live under /root (pyenv), which another user cannot
    reach; a venv only links to its base interpreter, so pick one outside.
    """
    candidates = [
        Path(sys._base_executable),
        Path("/usr/local/bin/python3"),
        Path("/usr/bin/python3"),
    ]
    for candidate in candidates:
        if user.pw_uid == os.geteuid() or others_can_run(candidate):
            version = subprocess.run(
                [str(candidate), "-c", "import sys; print(sys.version_info >= (3, 11))"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if version == "True":
                return str(candidate)
    pytest.skip(f"no Python 3.11+ that the user {user.pw_name} can run: {candidates}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A folder every user can traverse (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="connector-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_image(root: Path, base: str) -> tuple[Path, Path]:
    """The Dockerfile's build stage; returns the venv (root-owned, like /opt/venv) and
    the wheel."""
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("connector", "mappings"):  # connector/mappings_default/ links to mappings/
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "opt" / "venv"
    run([base, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--no-deps", "--wheel-dir", str(root / "wheels"), str(src)], cwd=src)
    (wheel,) = (root / "wheels").glob("*.whl")
    run([*pip, "install", "--no-compile", f"{wheel}[postgres]"])
    return venv, wheel


def build_sandbox_image(root: Path, base: str, wheel: Path) -> tuple[Path, Path]:
    """The Dockerfile's sandbox stage: the wheel with the sandbox extra, sandbox/ beside
    it; returns the venv and the folder to put on PYTHONPATH."""
    venv = root / "sandbox-image" / "venv"
    run([base, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--no-compile", f"{wheel}[sandbox]"])
    app = root / "sandbox-image" / "app"
    shutil.copytree(
        ROOT / "sandbox",
        app / "sandbox",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    return venv, app


def installed(venv: Path) -> set[str]:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {str(p["name"]).lower() for p in json.loads(done.stdout)}


def test_the_image_steps_install_and_run_the_daemon_as_a_non_root_user(image_root: Path) -> None:
    user = non_root_user()
    base = base_python(user)
    venv, wheel = build_image(image_root, base)
    python = str(venv / "bin" / "python")

    # the product: none of the sandbox, which says how to install it when asked for
    assert not {"starlette", "uvicorn", "trustme"} & installed(venv)
    missing = subprocess.run(
        [str(venv / "bin" / "connector"), "sandbox", "--port", "0"],
        capture_output=True,
        text=True,
        check=False,
        cwd=image_root,
    )
    assert missing.returncode == 4, missing.stderr
    assert "pip install -e '.[sandbox]'" in " ".join(missing.stderr.split())
    assert "Traceback" not in missing.stderr
    sandbox_venv, sandbox_app = build_sandbox_image(image_root, base, wheel)
    assert {"starlette", "uvicorn", "trustme"} <= installed(sandbox_venv)

    migrations = subprocess.run(
        [
            python,
            "-c",
            "import connector.state.migrations as m, pathlib; "
            "p = pathlib.Path(m.__file__).parent; "
            "print('\\n'.join(str(f.relative_to(p)) for f in p.rglob('*')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=image_root,
    ).stdout.split()
    assert "script.py.mako" in migrations
    assert "versions/0001_initial.py" in migrations
    assert (
        "/work"
        not in subprocess.run(  # the wheel, not the source checkout
            [python, "-c", "import connector; print(connector.__file__)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=image_root,
        ).stdout
    )

    # the default mappings and their schema come with the package, not the checkout
    init = image_root / "init"
    run([str(venv / "bin" / "connector"), "mappings", "init", str(init)], cwd=image_root)
    first = (init / "salesforce.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# yaml-language-server: $schema={(init / 'mapping.schema.json').resolve()}"
    assert (init / "dynamics.yaml").is_file()

    app, data, shared = image_root / "app", image_root / "data", image_root / "shared"
    shutil.copytree(ROOT / "mappings", app / "mappings")
    shutil.copytree(ROOT / "config", app / "config")
    data.mkdir()
    shared.mkdir()
    sandbox_port, health_port = free_port(), free_port()
    text = (ROOT / "config" / "compose-sandbox.yaml").read_text(encoding="utf-8")
    text = text.replace("https://sandbox:8700", f"https://127.0.0.1:{sandbox_port}")
    text = text.replace("/shared/", f"{shared}/").replace("/app/", f"{app}/")
    config: dict[str, Any] = YAML(typ="safe").load(text)
    config["connections"][0]["schedule"] = {"interval_s": 5, "jitter_s": 0}
    yaml = YAML(typ="safe")
    with (app / "config" / "smoke.yaml").open("w", encoding="utf-8") as fh:
        yaml.dump(config, fh)
    for path in (app, data, shared):
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)

    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(app),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CONNECTOR_STATE_URL": f"sqlite:///{data}/state.db",
        "CONNECTOR_CONFIG": str(app / "config" / "smoke.yaml"),
        "CONNECTOR_HEALTH_HOST": "127.0.0.1",
        "CONNECTOR_HEALTH_PORT": str(health_port),
        "CONNECTOR_LOG_FORMAT": "json",
        "CONNECTOR_GRACE_S": "30",
    }
    as_user: dict[str, Any] = {"cwd": app, "env": env, "text": True}
    if os.geteuid() == 0:
        as_user.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    sandbox_env = {**env, "PATH": f"{sandbox_venv / 'bin'}:/usr/bin:/bin"}
    sandbox_env["PYTHONPATH"] = str(sandbox_app)  # as the sandbox stage sets it
    sandbox = subprocess.Popen(
        [
            str(sandbox_venv / "bin" / "connector"),
            "sandbox",
            "--port",
            str(sandbox_port),
            "--opportunities",
            "60",
            "--ca-file",
            str(shared / "sandbox-ca.pem"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **{**as_user, "env": sandbox_env},
    )
    daemon: subprocess.Popen[str] | None = None
    try:
        wait_until(
            lambda: sandbox_up(sandbox_port, shared / "sandbox-ca.pem"), "the sandbox", sandbox
        )
        daemon = subprocess.Popen(
            [str(venv / "bin" / "connector"), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **as_user,
        )
        wait_until(lambda: cycles(health_port) >= 2, "two cycles", daemon)
        assert get(health_port, "/healthz") == (200, {"status": "ok"})
        status, ready = get(health_port, "/readyz")
        assert status == 200, ready
        assert ready["state"] == "ok"
        assert ready["connections"][CONN]["cycles"] >= 2
        samples = metrics(health_port)
        assert sum(v for (n, ls), v in samples.items() if n == "connector_cycles_total") >= 2
        assert (
            sum(
                v
                for (n, ls), v in samples.items()
                if n == "connector_records_total" and ("action", "created") in ls
            )
            > 0
        )
        assert (
            sum(
                v
                for (n, ls), v in samples.items()
                if n == "connector_api_calls_total" and ("system", "core") in ls
            )
            > 0
        )
        assert any(n == "connector_cursor_lag_seconds" for n, _ in samples)
        assert any(n == "connector_cycle_duration_seconds_count" for n, _ in samples)

        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, stderr[-3000:]
    finally:
        for proc in (daemon, sandbox):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
    state = data / "state.db"
    assert state.exists() and state.stat().st_uid == user.pw_uid
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e for e in events if e.get("event") == "cycle" and e["connection"] == CONN]


def wait_until(
    condition: Any, what: str, proc: subprocess.Popen[str], timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def sandbox_up(port: int, ca_file: Path) -> bool:
    if not ca_file.exists():
        return False
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/_sandbox/stats", context=context, timeout=2
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(json.loads(exc.read()))


def metrics(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def cycles(port: int) -> float:
    try:
        samples = metrics(port)
    except OSError:
        return 0
    return sum(v for (n, _), v in samples.items() if n == "connector_cycles_total")
