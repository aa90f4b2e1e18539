"""`pip install .` gives a working `opentracy` command: the wheel holds every template, static file,
migration and data file; installed into a fresh venv (outside the source tree) it migrates, creates
a key and serves pages and /v1 from its own var/ directory.

The fresh venv borrows the project venv's third-party packages through a .pth file (installing
torch and the rest again would take minutes and test pip, not us); the engine itself comes only
from the wheel, and it runs from a directory with no source tree in sight."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_pins_what_requirements_txt_pins() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pinned = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert declared == pinned
    assert all(re.search(r"==\d", d) for d in declared)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."]
    subprocess.run(build, cwd=ROOT, check=True, timeout=300)
    for leftover in ("build", "opentracy_engine.egg-info"):  # setuptools' scratch space
        subprocess.run(["rm", "-rf", str(ROOT / leftover)], check=True)
    (path,) = out.glob("opentracy_engine-*.whl")
    return path


def test_the_wheel_holds_every_asset_and_no_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "opentracy_engine-0.1.0.data/data/share/opentracy/"
    for folder in ("templates", "static"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file():
                assert data + path.relative_to(ROOT).as_posix() in names, path
    for app in ("gateway", "traces", "datasets", "distillation", "routing"):
        for path in (ROOT / app).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and "/tests/" not in rel and "__pycache__" not in rel and path.suffix != ".pyc":
                assert rel in names, rel
    assert not [n for n in names if "/tests/" in n]
    assert "opentracy_site/cli.py" in names and "routing/data/prior.json" in names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)]
    subprocess.run(pip, check=True, timeout=300)
    # Embedded mode in its own directory, whatever the test session runs against.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "CLICKHOUSE_URL"))}
    env.update(OPENTRACY_VAR_DIR=str(home / "var"), OPENTRACY_LOCAL_MODEL_PRELOAD="false", PYTHONPATH="")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    yield venv / "bin" / "opentracy", env


def run(installed: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    command, env = installed
    cwd = Path(env["OPENTRACY_VAR_DIR"]).parent
    return subprocess.run([str(command), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_command_migrates_creates_a_key_and_serves(installed: tuple[Path, dict[str, str]]) -> None:
    helped = run(installed, "--help")
    assert helped.returncode == 0
    assert all(c in helped.stdout for c in ("serve", "worker", "migrate", "create-api-key"))
    where = run(installed, "manage", "shell", "-c", "import opentracy_site, routing; print(opentracy_site.__file__)")
    assert where.returncode == 0, where.stderr
    assert "site-packages" in where.stdout and str(ROOT) not in where.stdout  # the wheel, not the checkout
    assert run(installed, "migrate").returncode == 0
    assert run(installed, "manage", "bootstrap").returncode == 0
    key = run(installed, "create-api-key", "--project", "default", "--name", "ci")
    assert key.returncode == 0, key.stderr
    assert re.search(r"ot-[A-Za-z0-9_-]{20,}", key.stdout)
    bad = run(installed, "worker", "--queue", "nope")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr

    command, env = installed
    port = free_port()
    server = subprocess.Popen(
        [str(command), "serve", "--port", str(port)],
        env=env,
        cwd=Path(env["OPENTRACY_VAR_DIR"]).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "opentracy serve did not come up"
                time.sleep(0.5)
        with urllib.request.urlopen(base + "/accounts/login/", timeout=5) as page:
            html = page.read().decode()
        assert "<form" in html  # a site-wide template from share/opentracy
        css = re.search(r'href="(/static/[^"]+\.css)"', html)
        assert css, html[:500]
        with urllib.request.urlopen(base + css.group(1), timeout=5) as static:
            assert static.status == 200
        request = urllib.request.Request(base + "/v1/models", headers={"Authorization": "Bearer ot-wrong"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
