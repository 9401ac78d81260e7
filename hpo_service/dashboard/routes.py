"""The dashboard at ``/ui/``: server-rendered pages over the same services as the API.

Every page resolves the session cookie to a principal and calls the services with it,
so tenant scoping is exactly the API's (another tenant's study is a 404). Pages are
read-only but for three forms, each carrying a CSRF token: log in, log out, and "Refine
per module" on a study (it creates the per-module child study and opens it).
Charts are drawn in the browser by the vendored ECharts from data embedded as JSON.
"""

from __future__ import annotations

import hmac
import math
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from hpo_service.config import Settings
from hpo_service.dashboard.security import SecurityHeadersMiddleware
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Study, Trial, TrialState, objective_value
from hpo_service.errors import (
    AuthenticationError,
    ConflictError,
    HPOError,
    InvalidInputError,
    PermissionDeniedError,
)
from hpo_service.services import (
    history,
    refine,
    scaling,
    studies,
    trials,
    ui_sessions,
    worker_activity,
)
from hpo_service.services.transfer import effective_space

__all__ = ["install_dashboard", "router"]

SESSION_COOKIE = "hpo_session"
LOGIN_CSRF_COOKIE = "hpo_login_csrf"
SESSION_TTL_SECONDS = 8 * 3600
_HERE = Path(__file__).parent
_TRIAL_STATES = [s.value for s in TrialState]

templates = Jinja2Templates(directory=str(_HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session(request: Request) -> ui_sessions.UiSession | None:
    try:
        return ui_sessions.resume_session(
            _db(request), request.cookies.get(SESSION_COOKIE), now=utcnow()
        )
    except AuthenticationError:
        return None


def _to_login() -> RedirectResponse:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


def _set_session(request: Request, response: Response, session: ui_sessions.UiSession) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=SESSION_TTL_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _page(
    request: Request,
    template: str,
    session: ui_sessions.UiSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"session": session, "principal": session.principal if session else None, **context},
        status_code=status_code,
    )


# -- login ----------------------------------------------------------------------------------


def _login_form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", None, status_code, csrf=token, error=error)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login")
def login_page(request: Request) -> Response:
    """The login form, with a fresh double-submit CSRF token."""
    return _login_form(request)


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form(max_length=512)],
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Exchange an API key for a session cookie; the key itself is never stored."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        return _login_form(request, "The form expired; please try again.", 403)
    try:
        session = ui_sessions.open_session(
            _db(request), key, now=utcnow(), ttl_seconds=SESSION_TTL_SECONDS
        )
    except AuthenticationError:
        return _login_form(request, "That key is invalid, revoked or expired.", 401)
    except PermissionDeniedError as exc:
        return _login_form(request, exc.detail, 403)
    response = RedirectResponse("/ui/", status_code=303)
    _set_session(request, response, session)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """End the session (the form carries the session's CSRF token)."""
    session = _session(request)
    if session is None:
        return _to_login()
    ui_sessions.check_csrf(session, csrf)
    return _to_login()


# -- pages ----------------------------------------------------------------------------------


def _progress(study: Study) -> dict[str, Any]:
    counts = study.trial_counts
    finished = sum(counts.get(s, 0) for s in ("completed", "failed", "infeasible"))
    total = sum(counts.values())
    cap = study.max_trials or total
    percent = min(100, round(100 * finished / cap)) if cap else 0
    return {"finished": finished, "total": total, "cap": study.max_trials, "percent": percent}


@router.get("/")
def studies_page(
    request: Request,
    key: str | None = None,
    state: str | None = None,
    family: str | None = None,
    page_token: str | None = None,
) -> Response:
    """Studies visible to the caller, with state and progress.

    ``?key=`` bootstraps a session from an API key (for links printed by ``hpo serve``)
    and redirects at once, so the key does not stay in the address bar or history.
    """
    if key is not None:
        try:
            session = ui_sessions.open_session(
                _db(request), key, now=utcnow(), ttl_seconds=SESSION_TTL_SECONDS
            )
        except HPOError:
            return _to_login()
        response = RedirectResponse("/ui/", status_code=303)
        _set_session(request, response, session)
        return response
    current = _session(request)
    if current is None:
        return _to_login()
    page = studies.list_studies(
        _db(request),
        current.principal,
        state=state or None,
        family=family or None,
        page_size=50,
        page_token=page_token or None,
    )
    rows = [{"study": s, "progress": _progress(s)} for s in page.items]
    return _page(
        request,
        "studies.html",
        current,
        rows=rows,
        next_token=page.next_page_token,
        state=state or "",
        family=family or "",
    )


def _param_specs(study: Study) -> list[dict[str, Any]]:
    specs = []
    for p in study.config.space.parameters:
        data = p.model_dump(mode="json", exclude_none=True)
        specs.append(
            {
                "name": data["name"],
                "type": data["type"],
                "log": data.get("scale") == "log",
                "choices": data.get("choices") or data.get("values"),
            }
        )
    return specs


def _chart_data(study: Study, charted: list[Trial]) -> dict[str, Any]:
    """What dashboard.js plots: objective per trial, best so far, params of each trial."""
    objective = study.config.objective
    sign = objective.sign()
    best: float | None = None
    points = []
    for t in charted:
        value = objective_value(objective, t.result) if t.state is TrialState.COMPLETED else None
        if value is not None and (best is None or sign * value < sign * best):
            best = value
        points.append(
            {
                "number": t.number,
                "state": t.state.value,
                "value": value,
                "best": best,
                "params": t.params,
            }
        )
    return {
        "metric": objective.metric,
        "goal": objective.goal,
        "params": _param_specs(study),
        "trials": points,
    }


def _target(study: Study, query: dict[str, str]) -> dict[str, float] | None:
    """The extrapolation target from the form, or the proxy with 4x width by default."""
    scale = study.config.scale
    if scale is None:
        return None
    target: dict[str, float] = dict(scale.proxy.axes())
    if "width" in target:
        target["width"] = target["width"] * 4
    for axis in ("width", "depth", "batch_size", "tokens", "experts"):
        raw = query.get(f"target_{axis}", "").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                continue
            if math.isfinite(value):
                target[axis] = value
    return {k: (int(v) if float(v).is_integer() else v) for k, v in target.items()}


@router.get("/studies/{study_id}")
def study_page(
    request: Request,
    study_id: str,
    state: str | None = None,
    worker_id: str | None = None,
    page_token: str | None = None,
) -> Response:
    """One study: charts, the filtered trials table, region and extrapolation."""
    current = _session(request)
    if current is None:
        return _to_login()
    return _study_view(
        request,
        current,
        study_id,
        state=state,
        worker_id=worker_id,
        page_token=page_token,
    )


def _study_view(
    request: Request,
    current: ui_sessions.UiSession,
    study_id: str,
    *,
    state: str | None = None,
    worker_id: str | None = None,
    page_token: str | None = None,
    refine_error: str | None = None,
    status_code: int = 200,
) -> Response:
    """Render the study page; a failed refine re-renders it with the reason."""
    db = _db(request)
    study = studies.get_study(db, current.principal, study_id)
    charted = history.chart_trials(db, current.principal, study.id)
    table = trials.list_trials(
        db,
        current.principal,
        study.id,
        state=state if state in _TRIAL_STATES else None,
        worker_id=worker_id or None,
        page_size=50,
        page_token=page_token or None,
    )
    target = _target(study, dict(request.query_params))
    extrapolation, extrapolation_error = None, None
    if target is not None:
        try:
            extrapolation = scaling.extrapolate_trial(
                db, current.principal, study.id, target=target
            ).to_json()
        except HPOError as exc:
            extrapolation_error = exc.detail
    chart = _chart_data(study, charted)
    best = next(
        (p for p in reversed(chart["trials"]) if p["best"] is not None and p["value"] == p["best"]),
        None,
    )
    return _page(
        request,
        "study.html",
        current,
        status_code,
        study=study,
        progress=_progress(study),
        chart=chart,
        table=table.items,
        next_token=table.next_page_token,
        states=_TRIAL_STATES,
        state=state or "",
        worker_id=worker_id or "",
        region=effective_space(study.config),
        target=target,
        extrapolation=extrapolation,
        extrapolation_error=extrapolation_error,
        best=best,
        objective=study.config.objective,
        can_refine=_can_refine(study, best is not None),
        refine_error=refine_error,
        parent_study=study.metadata.get("parent_study"),
    )


def _can_refine(study: Study, has_best: bool) -> bool:
    """Offer the button only where the service would accept the request with defaults."""
    return (
        has_best
        and study.config.scale is not None
        and bool(refine.refinable_names(study.config.space))
    )


@router.post("/studies/{study_id}/refine")
def refine_study(
    request: Request, study_id: str, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    """Create the per-module child of a study (defaults of the API) and open it.

    A form post with the session's CSRF token; a refusal (no completed trial, nothing to
    refine) shows the study page again with the reason and the error's status.
    """
    current = _session(request)
    if current is None:
        return _to_login()
    ui_sessions.check_csrf(current, csrf)
    try:
        child = refine.refine_study(
            _db(request), current.principal, study_id, refine.Refinement(), now=utcnow()
        )
    except (InvalidInputError, ConflictError) as exc:
        return _study_view(
            request, current, study_id, refine_error=exc.detail, status_code=exc.status
        )
    return RedirectResponse(f"/ui/studies/{child.id}", status_code=303)


@router.get("/families/{family}")
def family_page(request: Request, family: str) -> Response:
    """A family's studies side by side, with each one's proxy shape and best value."""
    current = _session(request)
    if current is None:
        return _to_login()
    db = _db(request)
    page = studies.list_studies(db, current.principal, family=family, page_size=200)
    rows = []
    for s in page.items:
        found = studies.best_trials(db, current.principal, s.id)
        value = objective_value(s.config.objective, found[0].result) if found else None
        proxy = s.config.scale.proxy.axes() if s.config.scale is not None else None
        rows.append({"study": s, "progress": _progress(s), "best": value, "proxy": proxy})
    ladder = scaling.family_ladder(db, current.principal, family)
    return _page(request, "family.html", current, family=family, rows=rows, ladder=ladder)


@router.get("/workers")
def workers_page(request: Request) -> Response:
    """Workers holding leases, their last contact, and trials whose leases ran out."""
    current = _session(request)
    if current is None:
        return _to_login()
    overview = worker_activity.workers_overview(
        _db(request), current.principal, lease_seconds=_settings(request).lease_seconds
    )
    return _page(request, "workers.html", current, overview=overview, now=utcnow())


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


templates.env.filters["when"] = _when
templates.env.filters["num"] = _number


def install_dashboard(app: FastAPI) -> None:
    """Mount the pages, the static files and the security headers on ``app``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(_HERE / "static")), name="ui-static")
    app.add_middleware(SecurityHeadersMiddleware, prefix="/ui")
