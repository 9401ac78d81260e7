"""The typed half of the SDK: ``HPOClient.studies`` and ``HPOClient.trials``.

Each method sends the same request as the client's JSON method of the same endpoint and
parses the answer into a model of ``hpo_service.client.models``, so that callers get
attribute access, real ``datetime`` values and type checking instead of string keys. The
JSON methods stay underneath as the single place that knows paths and bodies; these
classes only add the parsing (and pagination, which a dict interface cannot offer as
naturally).

A method named ``list`` shadows the builtin inside its class body, which is why the
annotations below spell ``builtins.list``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpo_service.client.models import (
    ExtrapolationResult,
    HeartbeatReply,
    MeasurementReply,
    ParamValue,
    Study,
    StudyPage,
    SuggestionBatch,
    Trial,
    TrialPage,
)

if TYPE_CHECKING:
    from hpo_service.client.client import HPOClient

__all__ = ["Studies", "Trials"]


class Studies:
    """Study endpoints with typed answers; reached as ``HPOClient.studies``.

    Every method raises ``ProblemError`` for an error answer and
    ``pydantic.ValidationError`` when an answer breaks the contract of API.md.
    """

    def __init__(self, client: HPOClient) -> None:
        self._client = client

    def create(self, spec: Mapping[str, Any], *, idempotency_key: str | None = None) -> Study:
        """``POST /v1/studies``: create a study from a spec shaped like API.md's body.

        The spec is sent as given (not validated here), so fields the service adds later
        can be used before this SDK models them.
        """
        return Study.model_validate(
            self._client.create_study(dict(spec), idempotency_key=idempotency_key)
        )

    def get(self, study_id: str) -> Study:
        """``GET /v1/studies/{id}``."""
        return Study.model_validate(self._client.get_study(study_id))

    def list(
        self,
        *,
        family: str | None = None,
        state: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> StudyPage:
        """``GET /v1/studies``: one page of the caller's studies, in creation order."""
        return StudyPage.model_validate(
            self._client.list_studies(
                family=family, state=state, name=name, page_size=page_size, page_token=page_token
            )
        )

    def iter(
        self,
        *,
        family: str | None = None,
        state: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Study]:
        """Every matching study, fetching page after page as the iteration reaches it."""
        token: str | None = None
        while True:
            page = self.list(
                family=family, state=state, name=name, page_size=page_size, page_token=token
            )
            yield from page.items
            if page.next_page_token is None:
                return
            token = page.next_page_token

    def update(
        self,
        study_id: str,
        *,
        state: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_trials: int | None = None,
    ) -> Study:
        """``PATCH /v1/studies/{id}``: change only the arguments given.

        ``None`` means "leave as is", which is why ``max_trials`` cannot be cleared here;
        use the JSON method ``HPOClient.update_study(id, max_trials=None)`` for that.
        """
        changes: dict[str, Any] = {}
        if state is not None:
            changes["state"] = state
        if metadata is not None:
            changes["metadata"] = dict(metadata)
        if max_trials is not None:
            changes["max_trials"] = max_trials
        return Study.model_validate(self._client.update_study(study_id, **changes))

    def delete(self, study_id: str) -> None:
        """``DELETE /v1/studies/{id}`` (admin): the study and all its trials."""
        self._client.delete_study(study_id)

    def best(self, study_id: str) -> builtins.list[Trial]:
        """``GET /v1/studies/{id}/best``: the best trial, the Pareto set, or ``[]``."""
        return [Trial.model_validate(t) for t in self._client.best(study_id)]

    def extrapolate(
        self,
        study_id: str,
        target: Mapping[str, float],
        *,
        trial_id: str | None = None,
    ) -> ExtrapolationResult:
        """``POST /v1/studies/{id}/extrapolate``: a trial's values at a larger shape.

        Args:
            study_id: a study with a ``scale`` section.
            target: target axes (``width``, ``depth``, ``batch_size``, ``tokens``,
                ``experts``); omitted axes keep the proxy's.
            trial_id: the trial to scale (default: the study's best).
        """
        return ExtrapolationResult.model_validate(
            self._client.extrapolate(study_id, dict(target), trial_id=trial_id)
        )

    def rungs(
        self,
        study_id: str,
        target: Mapping[str, float],
        *,
        param: str = "lr",
        offsets: Sequence[float] | None = None,
        replicates: int | None = None,
        trial_id: str | None = None,
    ) -> builtins.list[Study]:
        """``POST /v1/studies/{id}/rungs``: the family ladder's depth rungs for ``target``.

        Args:
            study_id: a tuned study with a ``family`` and a ``scale`` section.
            target: the target's axes; its depth must exceed the proxy's.
            param: the log-scaled float to sweep at every depth.
            offsets: the grid in octaves around the trial's value (default: the service's).
            replicates: trials per grid point (default: the service's).
            trial_id: the trial to centre on (default: the study's best).

        Returns:
            The rung studies, shallowest first; their queued trials are ordinary work.
        """
        body: dict[str, Any] = {"target": dict(target), "param": param}
        if offsets is not None:
            body["offsets"] = list(offsets)
        if replicates is not None:
            body["replicates"] = replicates
        if trial_id is not None:
            body["trial_id"] = trial_id
        return [Study.model_validate(s) for s in self._client.rungs(study_id, body)["studies"]]


class Trials:
    """Trial endpoints with typed answers; reached as ``HPOClient.trials``.

    Every method raises ``ProblemError`` for an error answer and
    ``pydantic.ValidationError`` when an answer breaks the contract of API.md.
    """

    def __init__(self, client: HPOClient) -> None:
        self._client = client

    # Worker side -------------------------------------------------------------------------
    def suggest(self, study_id: str, worker_id: str, count: int = 1) -> SuggestionBatch:
        """``POST /v1/studies/{id}/suggestions``: lease up to ``count`` trials."""
        return SuggestionBatch.model_validate(self._client.suggest(study_id, worker_id, count))

    def heartbeat(self, trial_id: str, worker_id: str) -> HeartbeatReply:
        """``POST /v1/trials/{id}/heartbeat``: keep the lease; hear whether to stop."""
        return HeartbeatReply.model_validate(self._client.heartbeat(trial_id, worker_id))

    def report(
        self,
        trial_id: str,
        worker_id: str,
        step: int,
        metrics: Mapping[str, float],
        elapsed_s: float | None = None,
    ) -> MeasurementReply:
        """``POST /v1/trials/{id}/measurements``: one intermediate result (extends the lease)."""
        return MeasurementReply.model_validate(
            self._client.request(
                "POST",
                f"/v1/trials/{trial_id}/measurements",
                json={
                    "worker_id": worker_id,
                    "step": step,
                    "metrics": dict(metrics),
                    "elapsed_s": elapsed_s,
                },
            )
        )

    def complete(
        self,
        trial_id: str,
        worker_id: str,
        metrics: Mapping[str, float],
        cost: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Trial:
        """``POST /v1/trials/{id}/complete``; the same body again answers the same trial."""
        return Trial.model_validate(
            self._client.complete(
                trial_id,
                worker_id,
                dict(metrics),
                dict(cost) if cost is not None else None,
                idempotency_key=idempotency_key,
            )
        )

    def fail(
        self,
        trial_id: str,
        worker_id: str,
        error: str,
        *,
        retry: bool = False,
        idempotency_key: str | None = None,
    ) -> Trial:
        """``POST /v1/trials/{id}/fail``; with ``retry`` the trial is queued again."""
        return Trial.model_validate(
            self._client.fail(
                trial_id, worker_id, error, retry=retry, idempotency_key=idempotency_key
            )
        )

    def infeasible(
        self, trial_id: str, worker_id: str, reason: str, *, idempotency_key: str | None = None
    ) -> Trial:
        """``POST /v1/trials/{id}/infeasible``: the point cannot be evaluated."""
        return Trial.model_validate(
            self._client.infeasible(trial_id, worker_id, reason, idempotency_key=idempotency_key)
        )

    # Client side -------------------------------------------------------------------------
    def add(
        self,
        study_id: str,
        params: Mapping[str, ParamValue],
        metrics: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Trial:
        """``POST /v1/studies/{id}/trials``: queue a point, or import it finished.

        With ``metrics`` the trial is stored ``completed`` (warm start, imported history);
        without, it is queued ``requested`` for a worker.
        """
        return Trial.model_validate(
            self._client.add_trial(
                study_id,
                dict(params),
                dict(metrics) if metrics is not None else None,
                dict(metadata) if metadata is not None else None,
                idempotency_key=idempotency_key,
            )
        )

    def add_batch(
        self,
        study_id: str,
        trials: builtins.list[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> builtins.list[Trial]:
        """``POST /v1/studies/{id}/trials:batch``: all or nothing.

        Args:
            study_id: the study.
            trials: bodies like ``add``'s: ``{"params", "result": {"metrics"}?, "metadata"?}``.
            idempotency_key: makes a retried batch create its trials once.
        """
        created = self._client.add_trials(
            study_id, [dict(t) for t in trials], idempotency_key=idempotency_key
        )
        return [Trial.model_validate(t) for t in created]

    def get(self, trial_id: str) -> Trial:
        """``GET /v1/trials/{id}``: one trial with its measurements."""
        return Trial.model_validate(self._client.get_trial(trial_id))

    def list(
        self,
        study_id: str,
        *,
        state: str | None = None,
        worker_id: str | None = None,
        order_by: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> TrialPage:
        """``GET /v1/studies/{id}/trials``: one page, by ``number`` or best ``value`` first."""
        return TrialPage.model_validate(
            self._client.list_trials(
                study_id,
                state=state,
                worker_id=worker_id,
                order_by=order_by,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def iter(
        self,
        study_id: str,
        *,
        state: str | None = None,
        worker_id: str | None = None,
        order_by: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Trial]:
        """Every matching trial, fetching page after page as the iteration reaches it."""
        token: str | None = None
        while True:
            page = self.list(
                study_id,
                state=state,
                worker_id=worker_id,
                order_by=order_by,
                page_size=page_size,
                page_token=token,
            )
            yield from page.items
            if page.next_page_token is None:
                return
            token = page.next_page_token
