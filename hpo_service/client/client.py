"""A small synchronous Python client for the hpo_service HTTP API.

It has two faces over one connection:

- typed: ``client.studies`` and ``client.trials`` (``hpo_service.client.resources``)
  return pydantic models (``Study``, ``Trial``, ``StudyPage``, ...) and iterate over
  pages; new code should use these;
- JSON: the methods of ``HPOClient`` itself mirror API.md one per endpoint and return the
  decoded JSON exactly as the service sent it (plain dicts). They are the layer the typed
  face is built on, and they suit callers that pass answers on untouched; much existing
  code (the service's own API tests among it) indexes their dicts.

Both raise ``ProblemError`` for every error answer. Pass ``http=`` to reuse an existing
``httpx.Client``: a FastAPI ``TestClient`` works, and so does an ``httpx.Client`` over an
``httpx.MockTransport``, which is how the SDK's own tests see the requests it sends.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from hpo_service.client.errors import ProblemError
from hpo_service.client.resources import Studies, Trials

__all__ = ["HPOClient"]

JSON = dict[str, Any]


class HPOClient:
    """Talks to one hpo_service with one API key.

    Attributes:
        studies: the typed study endpoints (``create``, ``get``, ``list``, ``iter``, ...).
        trials: the typed trial endpoints (``suggest``, ``complete``, ``list``, ...).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._headers = headers
        self.studies = Studies(self)
        self.trials = Trials(self)

    def __enter__(self) -> HPOClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: JSON | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send one request; return the decoded body (None for 204).

        Raises:
            ProblemError: for any status ≥ 400.
        """
        headers = dict(self._headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._http.request(method, path, json=json, params=query, headers=headers)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"title": response.reason_phrase, "detail": response.text}
            raise ProblemError(response.status_code, body if isinstance(body, dict) else {})
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # Studies (JSON) ----------------------------------------------------------------------
    def create_study(self, study: JSON, *, idempotency_key: str | None = None) -> JSON:
        """``POST /v1/studies``."""
        out: JSON = self.request("POST", "/v1/studies", json=study, idempotency_key=idempotency_key)
        return out

    def get_study(self, study_id: str) -> JSON:
        """``GET /v1/studies/{id}``."""
        out: JSON = self.request("GET", f"/v1/studies/{study_id}")
        return out

    def list_studies(self, **filters: Any) -> JSON:
        """``GET /v1/studies`` (filters: family, state, name, page_size, page_token)."""
        out: JSON = self.request("GET", "/v1/studies", params=filters)
        return out

    def update_study(self, study_id: str, **changes: Any) -> JSON:
        """``PATCH /v1/studies/{id}`` with ``state``, ``metadata`` or ``max_trials``."""
        out: JSON = self.request("PATCH", f"/v1/studies/{study_id}", json=changes)
        return out

    def delete_study(self, study_id: str) -> None:
        """``DELETE /v1/studies/{id}`` (admin)."""
        self.request("DELETE", f"/v1/studies/{study_id}")

    def best(self, study_id: str) -> list[JSON]:
        """``GET /v1/studies/{id}/best``: the best trial(s), possibly empty."""
        out: list[JSON] = self.request("GET", f"/v1/studies/{study_id}/best")["trials"]
        return out

    def extrapolate(
        self, study_id: str, target: dict[str, float], *, trial_id: str | None = None
    ) -> JSON:
        """``POST /v1/studies/{id}/extrapolate``: a trial's values at a target shape."""
        body: JSON = {"target": target}
        if trial_id is not None:
            body["trial_id"] = trial_id
        out: JSON = self.request("POST", f"/v1/studies/{study_id}/extrapolate", json=body)
        return out

    def rungs(self, study_id: str, body: JSON) -> JSON:
        """``POST /v1/studies/{id}/rungs``: ``{"studies": [...]}``, the depth rungs made."""
        out: JSON = self.request("POST", f"/v1/studies/{study_id}/rungs", json=body)
        return out

    # Trials (JSON) -----------------------------------------------------------------------
    def suggest(self, study_id: str, worker_id: str, count: int = 1) -> JSON:
        """``POST /v1/studies/{id}/suggestions``: ``{"trials": [...], "study_state"}``."""
        out: JSON = self.request(
            "POST",
            f"/v1/studies/{study_id}/suggestions",
            json={"worker_id": worker_id, "count": count},
        )
        return out

    def heartbeat(self, trial_id: str, worker_id: str) -> JSON:
        """``POST /v1/trials/{id}/heartbeat``: ``{"lease_expires_at", "should_stop"}``."""
        out: JSON = self.request(
            "POST", f"/v1/trials/{trial_id}/heartbeat", json={"worker_id": worker_id}
        )
        return out

    def report(
        self,
        trial_id: str,
        worker_id: str,
        step: int,
        metrics: dict[str, float],
        elapsed_s: float | None = None,
    ) -> bool:
        """``POST /v1/trials/{id}/measurements``; returns ``should_stop``."""
        body = {"worker_id": worker_id, "step": step, "metrics": metrics, "elapsed_s": elapsed_s}
        return bool(
            self.request("POST", f"/v1/trials/{trial_id}/measurements", json=body)["should_stop"]
        )

    def complete(
        self,
        trial_id: str,
        worker_id: str,
        metrics: dict[str, float],
        cost: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JSON:
        """``POST /v1/trials/{id}/complete``; safe to repeat with the same body."""
        out: JSON = self.request(
            "POST",
            f"/v1/trials/{trial_id}/complete",
            json={"worker_id": worker_id, "metrics": metrics, "cost": cost},
            idempotency_key=idempotency_key,
        )
        return out

    def fail(
        self,
        trial_id: str,
        worker_id: str,
        error: str,
        *,
        retry: bool = False,
        idempotency_key: str | None = None,
    ) -> JSON:
        """``POST /v1/trials/{id}/fail``; with ``retry`` the trial is queued again."""
        out: JSON = self.request(
            "POST",
            f"/v1/trials/{trial_id}/fail",
            json={"worker_id": worker_id, "error": error, "retry": retry},
            idempotency_key=idempotency_key,
        )
        return out

    def infeasible(
        self, trial_id: str, worker_id: str, reason: str, *, idempotency_key: str | None = None
    ) -> JSON:
        """``POST /v1/trials/{id}/infeasible``."""
        out: JSON = self.request(
            "POST",
            f"/v1/trials/{trial_id}/infeasible",
            json={"worker_id": worker_id, "reason": reason},
            idempotency_key=idempotency_key,
        )
        return out

    def add_trial(
        self,
        study_id: str,
        params: dict[str, Any],
        metrics: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JSON:
        """``POST /v1/studies/{id}/trials``: queue a point, or import it finished."""
        body: JSON = {"params": params, "metadata": metadata}
        if metrics is not None:
            body["result"] = {"metrics": metrics}
        out: JSON = self.request(
            "POST", f"/v1/studies/{study_id}/trials", json=body, idempotency_key=idempotency_key
        )
        return out

    def add_trials(
        self, study_id: str, trials: list[JSON], *, idempotency_key: str | None = None
    ) -> list[JSON]:
        """``POST /v1/studies/{id}/trials:batch``, all or nothing."""
        out: list[JSON] = self.request(
            "POST",
            f"/v1/studies/{study_id}/trials:batch",
            json={"trials": trials},
            idempotency_key=idempotency_key,
        )["trials"]
        return out

    def list_trials(self, study_id: str, **filters: Any) -> JSON:
        """``GET /v1/studies/{id}/trials`` (state, worker_id, order_by, page_size, page_token)."""
        out: JSON = self.request("GET", f"/v1/studies/{study_id}/trials", params=filters)
        return out

    def get_trial(self, trial_id: str) -> JSON:
        """``GET /v1/trials/{id}``."""
        out: JSON = self.request("GET", f"/v1/trials/{trial_id}")
        return out

    def healthz(self) -> JSON:
        """``GET /healthz``."""
        out: JSON = self.request("GET", "/healthz")
        return out
