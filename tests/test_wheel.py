"""The wheel, installed away from the checkout, migrates a database and serves.

An editable install hides packaging mistakes: everything the checkout has is importable,
so a migration script, template or static file missing from the wheel goes unnoticed until
someone runs ``pip install hpo_service``. These tests build the wheel, install it with
``--no-deps`` into a fresh venv under ``tmp_path``, and borrow this venv's third-party
packages through a ``.pth`` line. A path line in a ``.pth`` file is only appended to
``sys.path``; the ``.pth`` files inside that path (among them the editable install's,
which points at the checkout) are not processed, so ``hpo_service`` can only come from
the wheel. Every command runs from a directory outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from hpo_service.db.database import Database
from hpo_service.db.migrate import current_revision, head_revision
from tests.local_server import LOCALHOST, free_port, launch, stop_process, wait_until_up

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built without build isolation (hatchling is a dev dep)."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*command, "-w", str(out), str(ROOT)], cwd=out, env=dict(os.environ))
    (built,) = out.glob("hpo_service-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout with the wheel installed; returns its ``bin/``."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv, env=_env())
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    _run([*pip, str(wheel)], cwd=venv, env=_env())
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = _run([python, "-c", where], cwd=venv, env=_env())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(site.strip()) / "borrowed_site_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv / "bin"


def _env() -> dict[str, str]:
    """This environment without what would point the child at the checkout or a database."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("HPO_")}


def test_the_wheel_carries_migrations_and_dashboard_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hpo_service/migrations/env.py" in names
    assert "hpo_service/migrations/script.py.mako" in names
    versions = sorted((ROOT / "migrations" / "versions").glob("*.py"))
    assert versions
    for script in versions:
        assert f"hpo_service/migrations/versions/{script.name}" in names
    for page in (ROOT / "hpo_service" / "dashboard" / "templates").iterdir():
        assert f"hpo_service/dashboard/templates/{page.name}" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "migrations/"))]
    assert not [n for n in names if "__pycache__" in n]


def test_the_installed_package_comes_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    code = (
        "import hpo_service, httpx; from hpo_service.db.migrate import migrations_dir; "
        "print(hpo_service.__file__); print(migrations_dir()); print(httpx.__file__)"
    )
    package, migrations, borrowed = _run(
        [str(installed / "python"), "-c", code], cwd=tmp_path, env=_env()
    ).splitlines()
    venv = installed.parent.resolve()
    assert Path(package).resolve().is_relative_to(venv), package
    assert Path(migrations).resolve().is_relative_to(venv), migrations
    assert Path(migrations).name == "migrations"
    # third-party packages do come from this venv, through the .pth line
    assert Path(borrowed).resolve().is_relative_to(Path(sysconfig.get_path("purelib")).resolve())


def test_the_installed_hpo_migrates_and_serves(installed: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    out = _run([str(installed / "hpo"), "migrate", "--database-url", url], cwd=tmp_path, env=_env())
    assert "database at head" in out
    db = Database(url)
    try:  # the wheel's scripts reach the checkout's head: none was left out
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()

    port = free_port()
    argv = [str(installed / "hpo"), "serve", "--port", str(port), "--database-url", url]
    log = tmp_path / "serve.log"
    proc = launch(argv, env=_env(), cwd=tmp_path, log=log)
    base = f"http://{LOCALHOST}:{port}"
    try:
        wait_until_up(proc, f"{base}/healthz", timeout=120)
        # readiness compares the database with the head of the scripts the wheel carries
        assert httpx.get(f"{base}/readyz", timeout=10).json()["schema"] == head_revision()
        # templates and static files are package data too
        assert httpx.get(f"{base}/ui/login", timeout=10).status_code == 200
        assert httpx.get(f"{base}/ui/static/dashboard.css", timeout=10).status_code == 200
    except Exception:
        print(log.read_text())
        raise
    finally:
        stop_process(proc)
