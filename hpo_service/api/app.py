"""The FastAPI application factory. Configuration comes in as an argument, never globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hpo_service import __version__
from hpo_service.api.housekeeping import Housekeeper
from hpo_service.api.middleware import BodyGuardMiddleware
from hpo_service.api.problems import install_problem_handlers
from hpo_service.api.routes import health, studies, trials
from hpo_service.config import Settings
from hpo_service.db.database import Database

__all__ = ["app_from_environment", "create_app"]


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    """Build the service for ``settings``.

    Args:
        settings: configuration; its database must already be migrated (``hpo serve`` and
            the tests do that first).
        db: an existing database handle to share (tests); by default one is created.
    """
    database = db or Database(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
    )
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
    )
    app.state.settings = settings
    app.state.db = database
    app.state.housekeeper = housekeeper
    install_problem_handlers(app)
    app.add_middleware(BodyGuardMiddleware, settings=settings, db=database)
    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(trials.router)
    return app


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (multi-process serving): settings from HPO_*."""
    return create_app(Settings())
