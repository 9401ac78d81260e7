"""The FastAPI application factory. Configuration comes in as an argument, never globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hpo_service import __version__
from hpo_service.api.auth_cache import AuthCache
from hpo_service.api.auth_throttle import FailedAuthLimiter
from hpo_service.api.housekeeping import Housekeeper
from hpo_service.api.key_usage import KeyUsageMiddleware
from hpo_service.api.metrics import Metrics, MetricsMiddleware
from hpo_service.api.metrics import router as metrics_router
from hpo_service.api.middleware import BodyGuardMiddleware
from hpo_service.api.problems import PROBLEM_RESPONSES, install_problem_handlers
from hpo_service.api.routes import admin, families, health, studies, transfer, trials
from hpo_service.api.schemas.common import Problem
from hpo_service.config import Settings
from hpo_service.dashboard.routes import install_dashboard
from hpo_service.db.database import Database
from hpo_service.db.key_secret_check import KeySecretMismatchError
from hpo_service.services.key_usage import KeyUsageRecorder

__all__ = ["app_from_environment", "create_app"]

_TAG_ORDER = ("health", "studies", "trials", "families", "admin", "transfer")


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    """Build the service for ``settings``.

    Args:
        settings: configuration; its database must already be migrated (``hpo serve`` and
            the tests do that first).
        db: an existing database handle to share (tests); by default one is created.

    Raises:
        KeySecretMismatchError: the key-hash secret is not the one the database's keys
            were hashed with; serving would reject every key, so the server must not start.
    """
    database = db or Database(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
        key_secret=settings.key_secret,
    )
    try:
        database.verify_key_secret()
    except KeySecretMismatchError:
        if db is None:
            database.dispose()
        raise
    housekeeper = Housekeeper(database, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        housekeeper.start()
        try:
            yield
        finally:
            housekeeper.stop()
            if db is None:
                database.dispose()

    app = FastAPI(
        title="hpo_service",
        version=__version__,
        summary="Bayesian optimisation of hyperparameters on small proxies, as a service.",
        lifespan=lifespan,
        openapi_tags=[{"name": tag} for tag in _TAG_ORDER],
    )
    app.state.settings = settings
    app.state.db = database
    app.state.housekeeper = housekeeper
    app.state.auth_cache = AuthCache(settings.auth_cache_seconds)
    app.state.auth_limiter = FailedAuthLimiter(
        settings.auth_failure_limit, settings.auth_failure_window_seconds
    )
    install_problem_handlers(app)
    app.add_middleware(BodyGuardMiddleware, settings=settings, db=database)
    app.state.metrics = Metrics(database)
    app.add_middleware(KeyUsageMiddleware, recorder=KeyUsageRecorder(database))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: times all
    # Routes are matched in order, router by router, and nearly every request is a
    # worker's heartbeat or report: matching them first saves the failed matches
    # against every other route (a sixth of the framework's work per heartbeat).
    # ``openapi_tags`` keeps the documentation in its reading order regardless.
    app.include_router(trials.router, responses=PROBLEM_RESPONSES)
    app.include_router(health.router)
    app.include_router(studies.router, responses=PROBLEM_RESPONSES)
    app.include_router(families.router, responses=PROBLEM_RESPONSES)
    app.include_router(admin.router, responses=PROBLEM_RESPONSES)
    app.include_router(transfer.router, responses=PROBLEM_RESPONSES)
    app.include_router(metrics_router)
    install_dashboard(app)
    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Add the Problem schema to the OpenAPI components the error responses refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            for name, sub in components["Problem"].pop("$defs", {}).items():
                components.setdefault(name, sub)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (multi-process serving): settings from HPO_*."""
    return create_app(Settings())
