"""The compose file and Dockerfiles cannot run here (no Docker engine); check they agree."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from hpo_service.config import Settings
from hpo_service.db.key_secret import key_secret_path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("service.Dockerfile", "worker.Dockerfile")


def _dockerfile(name: str) -> str:
    return (ROOT / "docker" / name).read_text()


def _final_stage(text: str) -> list[str]:
    """The instructions after the last FROM: what the image that runs is made of."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    instructions = [line for line in lines if not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last_from:]


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the patterns used here: a match on the path or any ancestor.

    ``**/`` at the start matches any number of leading directories. Negations (``!``)
    are not supported, and a test below makes sure .dockerignore uses none.
    """
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        for pattern in patterns:
            if pattern.startswith("**/"):
                tails = ("/".join(parts[start:end]) for start in range(end))
                if any(fnmatchcase(tail, pattern[3:]) for tail in tails):
                    return True
            elif fnmatchcase("/".join(parts[:end]), pattern):
                return True
    return False


def test_compose_services_ports_and_environment_agree() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "service", "worker"}
    db_env = services["db"]["environment"]
    url = make_url(services["service"]["environment"]["HPO_DATABASE_URL"])
    assert url.get_backend_name() == "postgresql"
    assert (url.username, url.password, url.host, url.database) == (
        db_env["POSTGRES_USER"],
        db_env["POSTGRES_PASSWORD"],
        "db",
        db_env["POSTGRES_DB"],
    )
    assert "pgdata:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert "healthcheck" in services["db"]
    assert services["service"]["depends_on"]["db"]["condition"] == "service_healthy"
    port = Settings().port
    assert f"{port}:{port}" in services["service"]["ports"]
    assert str(port) in services["service"]["command"]
    assert services["worker"]["environment"]["HPO_SERVER"] == f"http://service:{port}"
    # every HPO_ variable set on the service is a real setting
    fields = {f"HPO_{name.upper()}" for name in Settings.model_fields}
    assert set(services["service"]["environment"]) <= fields


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_install_the_built_wheel_after_cpu_torch(name: str) -> None:
    text = _dockerfile(name)
    stage = _final_stage(text)
    # the wheel is built from the sources, migrations included (they ship inside it)
    assert "COPY migrations ./migrations" in text
    assert "RUN pip wheel --no-deps -w /dist ." in text
    assert not re.search(r"pip install[^\n]*(\s-e\s|--editable)", text)
    installs = [i for i, line in enumerate(stage) if line.startswith("RUN pip install")]
    torch, wheel = installs
    assert "torch==2.13.0" in stage[torch]
    assert "/dist/hpo_service-*.whl" in stage[wheel]
    # no source tree in the image that runs: only the wheel comes from the build stage
    copies = [line for line in stage if line.startswith("COPY")]
    assert copies == ["COPY --from=wheel /dist /dist"]


def test_each_image_installs_only_the_extras_it_runs() -> None:
    service = _final_stage(_dockerfile("service.Dockerfile"))
    worker = _final_stage(_dockerfile("worker.Dockerfile"))
    assert "RUN pip install /dist/hpo_service-*.whl && rm -rf /dist" in service
    assert 'RUN pip install "$(ls /dist/hpo_service-*.whl)[worker]" && rm -rf /dist' in worker
    for stage in (service, worker):
        assert not [line for line in stage if re.search(r"\[[^]]*(dev|bench)", line)]
    assert 'CMD ["hpo", "serve", "--host", "0.0.0.0", "--port", "8000"]' in service


@pytest.mark.parametrize("name", DOCKERFILES)
def test_containers_run_as_a_user_of_their_own(name: str) -> None:
    stage = _final_stage(_dockerfile(name))
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users, "no USER: the container would run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    (useradd,) = [line for line in stage if "useradd" in line]
    assert f" {users[-1]}" in useradd
    # nothing after USER may need root (apt-get, pip into the system site-packages)
    after = stage[stage.index(f"USER {users[-1]}") :]
    assert not [line for line in after if line.startswith("RUN")]


def test_the_key_secret_volume_is_where_the_service_user_keeps_it(monkeypatch) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["service"]
    (mount,) = [v for v in service["volumes"] if v.startswith("hpo-config:")]
    target = mount.split(":", 1)[1]
    text = _dockerfile("service.Dockerfile")
    (home,) = re.findall(r"^ENV HOME=(\S+)$", text, flags=re.MULTILINE)
    # where the generated secret of the compose database goes, as that user
    monkeypatch.setenv("HOME", home)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    secret = key_secret_path(service["environment"]["HPO_DATABASE_URL"])
    assert secret is not None
    assert str(secret.parent) == target
    # the image makes that directory, owned by the user, so the new volume is writable
    assert f"install -d -o hpo -g hpo {target}" in text


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    patterns = _dockerignore()
    assert not [p for p in patterns if p.startswith("!")]
    for local in (
        ".venv/bin/python",
        ".git/HEAD",
        "hpo.db",
        "hpo.db-wal",
        "hpo.db.key-secret",
        "sub/dir/other.db",
        "hpo_service/__pycache__/config.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        "benchmarks/results/bench_load.json",
        "tests/artifacts/page.png",
    ):
        assert _ignored(local, patterns), local
    sources: list[str] = []
    for name in DOCKERFILES:
        for line in _dockerfile(name).splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                sources += line.split()[1:-1]
    assert {"pyproject.toml", "README.md", "hpo_service", "migrations"} <= set(sources)
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [f for f in path.rglob("*.py") if f.is_file()]
        kept = [f for f in files if "__pycache__" not in f.parts]
        assert kept, source
        for file in kept:
            assert not _ignored(file.relative_to(ROOT).as_posix(), patterns), file
