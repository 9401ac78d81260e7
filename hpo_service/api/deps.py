"""Dependencies as ``Annotated`` aliases, so handler signatures stay short."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from hpo_service.api.auth_cache import AuthCache
from hpo_service.api.auth_throttle import FailedAuthLimiter
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Principal, Role
from hpo_service.errors import AuthenticationError
from hpo_service.services import api_keys
from hpo_service.services.access import require_role

__all__ = [
    "AdminDep",
    "ClientDep",
    "DatabaseDep",
    "NowDep",
    "PrincipalDep",
    "SettingsDep",
    "WorkerDep",
]


def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _source(request: Request, token: str | None) -> str:
    """Who is trying: the key id named in the token, else the client address."""
    if token and token.count("_") >= 3:
        return "key:" + token.rsplit("_", 1)[0]
    return "addr:" + (request.client.host if request.client else "unknown")


def _principal(request: Request) -> Principal:
    db = _database(request)
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    token = _bearer(request)
    source = _source(request, token)
    limiter.check(source)
    cache: AuthCache = request.app.state.auth_cache
    principal = cache.get(token) if token else None
    if principal is None:
        try:
            principal = api_keys.authenticate(db, token, now=utcnow())
        except AuthenticationError:
            limiter.record_failure(source)
            raise
        if token:
            cache.put(token, principal)
    request.state.principal = principal
    return principal


def _with_role(role: Role):  # type: ignore[no-untyped-def]
    def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        require_role(principal, role)
        return principal

    return dependency


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]
NowDep = Annotated[datetime, Depends(utcnow)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
WorkerDep = Annotated[Principal, Depends(_with_role(Role.WORKER))]
ClientDep = Annotated[Principal, Depends(_with_role(Role.CLIENT))]
AdminDep = Annotated[Principal, Depends(_with_role(Role.ADMIN))]
