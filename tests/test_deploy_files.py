"""The compose file and Dockerfiles cannot run here (no Docker engine); check they agree."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from hpo_service.config import Settings

ROOT = Path(__file__).resolve().parents[1]


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


def test_dockerfiles_pin_cpu_torch_and_install_the_package() -> None:
    for name in ("service.Dockerfile", "worker.Dockerfile"):
        text = (ROOT / "docker" / name).read_text()
        assert "torch==2.13.0" in text
        assert "COPY migrations" in text
        assert "pip install -e ." in text
    assert 'CMD ["hpo", "serve"' in (ROOT / "docker" / "service.Dockerfile").read_text()
