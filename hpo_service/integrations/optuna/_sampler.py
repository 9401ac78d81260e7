"""``HPOServiceSampler``: an Optuna sampler whose relative suggestions come from the service.

How an Optuna study maps onto the service:

* **One service study per Optuna study and relative search space.** The relative space
  is Optuna's intersection space (parameters every finished trial had, single-valued
  ones left out), as for Optuna's own GP sampler. The service study is created when a
  space is first seen, and its id is kept in the Optuna study's system attributes
  (``hpo_service:study:<digest>``), so every process sharing the Optuna storage uses
  it. Processes that see a new space at the same moment send the same body with the
  same Idempotency-Key (derived from the study's identity and the body) and so all get
  the same study: the service, not the Optuna storage, settles the race. A new
  service study is seeded with the Optuna trials already finished in that space.
* **One lease per Optuna trial.** ``sample_relative`` leases one service trial
  (``POST suggestions``) under the worker id ``optuna-<trial number>``; a background
  thread heartbeats it (``_leases``). A process killed mid-trial stops heartbeating,
  the lease expires, and the service serves the same point to the next Optuna trial of
  any process: nothing is lost with the process.
* **Everything else is sampled independently** (``independent_sampler``, by default
  ``RandomSampler(seed)``): parameters outside the relative space, the first trial
  (empty space), and every parameter when the service has nothing to give (a paused or
  completed study, ``max_trials`` reached, or the service unreachable past
  ``retry_deadline``, each logged).
* **``after_trial`` reports the outcome.** ``COMPLETE`` → ``complete`` with the value(s)
  (as the study's metrics: ``set_metric_names`` names, else ``value``/``value_<i>``);
  ``COMPLETE`` with an infinite value → ``infeasible``; ``FAIL`` → ``fail`` (not retried:
  Optuna moves on, and a deterministic failure would fail again); ``PRUNED`` →
  ``complete`` with the last intermediate value Optuna recorded as the trial's value,
  the way the service itself completes a trial it stopped early, so the designer learns
  that the point looked bad, which a failure would overstate as infeasible (a trial
  pruned before reporting anything has no value and is failed). A trial that ran at
  other values than it was handed (fixed or enqueued parameters) releases its lease,
  so the suggestion goes to the next trial, and is added as a completed user trial at
  the values it really used. A lease found lost when reporting (the trial outran it)
  is reported the same way, as a user trial.

The sampler needs a ``client`` key: it creates studies and adds user trials.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpo_service.client.backoff import Backoff, GiveUpError, retry_call
from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.integrations.optuna._history import metric_names, observation, study_body
from hpo_service.integrations.optuna._leases import Lease, LeaseKeeper, heartbeat_interval
from hpo_service.integrations.optuna._space import SpaceCodec, same_value

__all__ = ["STUDY_ATTR_PREFIX", "TRIAL_ATTR", "HPOServiceSampler"]

STUDY_ATTR_PREFIX = "hpo_service:study:"
"""Optuna study system attribute ``<prefix><space digest>`` → the service study id."""
TRIAL_ATTR = "hpo_service:trial"
"""Optuna trial system attribute: the service study, trial and worker id of its lease."""

T = TypeVar("T")
_log = logging.getLogger("hpo_service.integrations.optuna")
_CREATE_WAIT = 60.0  # longest wait for another process's creation of the same study


def _study_identity(study: Study) -> str:
    """What tells this Optuna study apart from any other, in any storage.

    Name and ids repeat across storages (a fresh SQLite file starts at 1 again), so the
    start time of trial 0, which exactly one process created, is part of it. A trial 0
    still waiting in the queue has no start time yet; no other trial can be sampled
    before it is popped (waiting trials are popped in order), so none sees that state.
    """
    storage = study._storage
    first = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, 0))
    started = first.datetime_start.isoformat() if first.datetime_start else "waiting"
    return f"{study.study_name}\n{study._study_id}\n{first._trial_id}\n{started}"


class HPOServiceSampler(BaseSampler):
    """Relative sampling by an hpo_service study; independent sampling by a fallback.

    Example::

        sampler = HPOServiceSampler("http://hpo:8000", api_key, seed=0)
        study = optuna.create_study(storage="sqlite:///optuna.db", sampler=sampler)
        study.optimize(objective, n_trials=100)

    Use one sampler per process (it holds an HTTP connection pool and a heartbeat
    thread); every process of a shared Optuna study then uses one service study.

    Args:
        url: the service's base URL.
        api_key: a ``client`` (or ``admin``) key.
        seed: seeds the service study's designer and the default independent sampler.
        algorithm: the service study's algorithm (default: the service's best).
        family: the service study's family, which makes it a transfer source for the
            family's later studies (and lets it use theirs, with ``transfer``).
        transfer: the service study's ``transfer`` object (API.md), e.g.
            ``{"method": "box", "sources": "family"}``.
        independent_sampler: samples what the service does not (default
            ``RandomSampler(seed)``).
        retry_deadline: seconds to retry a call while the service is unreachable before
            falling back to independent sampling (suggestions) or giving up on a report
            (the lease then expires and the point is served again).
        heartbeat_seconds: the longest interval between heartbeats; shortened to a third
            of the lease the service grants.
        client: an ``HPOClient`` to use instead of one built from ``url`` and
            ``api_key`` (for tests, or to share a configured client).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        seed: int | None = None,
        algorithm: str | None = None,
        family: str | None = None,
        transfer: dict[str, Any] | None = None,
        independent_sampler: BaseSampler | None = None,
        retry_deadline: float = 60.0,
        heartbeat_seconds: float = 60.0,
        client: HPOClient | None = None,
    ) -> None:
        self._client = client or HPOClient(url, api_key)
        self._owns_client = client is None
        self._seed = seed
        self._algorithm = algorithm
        self._family = family
        self._transfer = transfer
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._policy = Backoff(base=0.25, cap=5.0, deadline=retry_deadline)
        self._heartbeat_cap = heartbeat_seconds
        self._lock = threading.RLock()
        self._spaces: dict[tuple[int, int], IntersectionSearchSpace] = {}
        self._studies: dict[tuple[int, int, str], str] = {}
        self._keeper = LeaseKeeper(self._client)
        self._host = socket.gethostname()

    # BaseSampler --------------------------------------------------------------------------
    def reseed_rng(self) -> None:
        """Reseed the independent sampler (the service's designer has its own seed)."""
        self._independent.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Let the independent sampler prepare, as it would on its own."""
        self._independent.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Optuna's intersection space of the finished trials, without single values.

        A single-valued distribution has nothing to optimise, and a service parameter
        needs ``low < high``; the independent sampler returns its one value.
        """
        with self._lock:
            key = (id(study._storage), study._study_id)
            space = self._spaces.setdefault(key, IntersectionSearchSpace())
            found = space.calculate(study)
        return {name: d for name, d in found.items() if not d.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Lease one service trial for this Optuna trial and return its values.

        Returns:
            A value for every parameter of ``search_space``, or ``{}`` (independent
            sampling) when the space is empty or the service has nothing to give.
        """
        if not search_space:
            return {}
        codec = SpaceCodec(search_space)
        study_id = self._service_study(study, codec)
        if study_id is None:
            return {}
        lease = self._lease(study, trial, codec, study_id)
        return {} if lease is None else dict(lease.values)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Delegate to the independent sampler."""
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Report the finished trial to the service (see the module docstring)."""
        try:
            lease = self._keeper.release(self._trial_key(study, trial))
            if lease is not None:
                self._report(study, trial, state, values, lease)
        finally:
            self._independent.after_trial(study, trial, state, values)

    def close(self) -> None:
        """Stop heartbeating and close the connection (if this sampler opened it)."""
        self._keeper.close()
        if self._owns_client:
            self._client.close()

    # Service study ------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        return retry_call(fn, self._policy)

    def _service_study(self, study: Study, codec: SpaceCodec) -> str | None:
        """The service study for this Optuna study and space, created on first use."""
        key = (id(study._storage), study._study_id, codec.digest)
        attr = STUDY_ATTR_PREFIX + codec.digest
        with self._lock:
            if key in self._studies:
                return self._studies[key]
            known = study._storage.get_study_system_attrs(study._study_id).get(attr)
            if known is None:
                try:
                    known = self._create(study, codec)
                except GiveUpError as exc:
                    _log.warning("service unreachable (%s); sampling independently", exc.last)
                    return None
                study._storage.set_study_system_attr(study._study_id, attr, known)
                self._seed_history(study, codec, known)
            self._studies[key] = str(known)
            return str(known)

    def _create(self, study: Study, codec: SpaceCodec) -> str:
        """Create the service study, or get the one a racing process is creating."""
        body = study_body(
            study, codec, family=self._family, algorithm=self._algorithm, seed=self._seed
        )
        if self._transfer is not None:
            body["transfer"] = self._transfer
        blob = _study_identity(study) + "\n" + json.dumps(body, sort_keys=True)
        idem = "optuna-study-" + hashlib.sha256(blob.encode()).hexdigest()[:48]
        give_up = time.monotonic() + _CREATE_WAIT
        while True:
            try:
                created = self._call(lambda: self._client.create_study(body, idempotency_key=idem))
                return str(created["id"])
            except ProblemError as exc:
                # 409 idempotency-conflict: the same creation is in flight elsewhere.
                if exc.slug != "idempotency-conflict" or time.monotonic() > give_up:
                    raise
                time.sleep(0.2)

    def _seed_history(self, study: Study, codec: SpaceCodec, study_id: str) -> None:
        """Add the Optuna trials finished in this space so far, once each."""
        metrics = metric_names(study)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        for past in finished:
            if past.system_attrs.get(TRIAL_ATTR, {}).get("study") == study_id:
                continue  # leased from this study: its completion reached it already
            body = observation(past, codec, metrics)
            if body is not None:
                self._add_observation(study_id, past.number, body)

    def _add_observation(self, study_id: str, number: int, body: dict[str, Any]) -> None:
        # One key per Optuna trial: racing processes seeding the same study add it once.
        idem = f"optuna-obs-{study_id}-{number}"
        try:
            self._call(
                lambda: self._client.add_trial(
                    study_id,
                    body["params"],
                    body["result"]["metrics"],
                    body["metadata"],
                    idempotency_key=idem,
                )
            )
        except (GiveUpError, ProblemError) as exc:
            _log.warning("Optuna trial %d not added to service study %s: %s", number, study_id, exc)

    # Leases -------------------------------------------------------------------------------
    @staticmethod
    def _trial_key(study: Study, trial: FrozenTrial) -> tuple[int, int, int]:
        return (id(study._storage), study._study_id, trial._trial_id)

    def _lease(
        self, study: Study, trial: FrozenTrial, codec: SpaceCodec, study_id: str
    ) -> Lease | None:
        worker = f"optuna-{trial.number}"
        try:
            batch = self._call(lambda: self._client.trials.suggest(study_id, worker, 1))
        except GiveUpError as exc:
            _log.warning("service unreachable (%s); sampling independently", exc.last)
            return None
        if not batch.trials:
            _log.info(
                "service study %s (%s) has no trial to give; sampling independently",
                study_id,
                batch.study_state,
            )
            return None
        leased = batch.trials[0]
        lease = Lease(
            trial_id=leased.id,
            study_id=study_id,
            worker_id=worker,
            attempt=leased.attempt,
            values=codec.decode(leased.params),
            interval=heartbeat_interval(leased, self._heartbeat_cap),
        )
        self._keeper.hold(self._trial_key(study, trial), lease)
        study._storage.set_trial_system_attr(
            trial._trial_id,
            TRIAL_ATTR,
            {"study": study_id, "trial": leased.id, "worker_id": worker},
        )
        return lease

    # Reporting ----------------------------------------------------------------------------
    def _report(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
        lease: Lease,
    ) -> None:
        used = trial.params
        if not all(n in used and same_value(used[n], v) for n, v in lease.values.items()):
            self._finish(lease, "fail", error="the Optuna trial ran at other values", retry=True)
            self._observe(study, trial, state, values, lease)
            return
        metrics = metric_names(study)
        if values is not None and state in (TrialState.COMPLETE, TrialState.PRUNED):
            result = dict(zip(metrics, values, strict=True))
            if all(math.isfinite(v) for v in values):
                cost = self._cost(trial, state)
                if not self._finish(lease, "complete", metrics=result, cost=cost):
                    self._observe(study, trial, state, values, lease)  # the lease ran out
                return
            self._finish(lease, "infeasible", error=f"Optuna trial value(s) {list(values)}")
            return
        why = "pruned before reporting a value" if state == TrialState.PRUNED else "failed"
        self._finish(lease, "fail", error=f"Optuna trial {trial.number} {why}", retry=False)

    def _cost(self, trial: FrozenTrial, state: TrialState) -> dict[str, Any]:
        """Where and how long the trial ran, and at which step it was pruned."""
        cost: dict[str, Any] = {"host": self._host, "optuna_trial": trial.number}
        if trial.datetime_start is not None:  # Optuna's times are naive local times
            elapsed = datetime.datetime.now() - trial.datetime_start
            cost["wall_seconds"] = round(elapsed.total_seconds(), 3)
        if state == TrialState.PRUNED:
            cost["pruned_at_step"] = trial.last_step
        return cost

    def _observe(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
        lease: Lease,
    ) -> None:
        """Add what the trial really measured as a user trial, if it measured anything."""
        codec = SpaceCodec(
            {n: trial.distributions[n] for n in lease.values if n in trial.distributions}
        )
        body = observation(trial, codec, metric_names(study), state=state, values=values)
        if body is not None:
            self._add_observation(lease.study_id, trial.number, body)

    def _finish(
        self,
        lease: Lease,
        action: str,
        *,
        metrics: dict[str, float] | None = None,
        cost: dict[str, Any] | None = None,
        error: str = "",
        retry: bool = False,
    ) -> bool:
        """Send the finishing call; False when the lease turned out to be lost."""
        idem = f"optuna-{action}-{lease.trial_id}-{lease.attempt}-{uuid.uuid4().hex}"
        tid, wid = lease.trial_id, lease.worker_id

        def send() -> Any:
            if action == "complete":
                return self._client.complete(tid, wid, metrics or {}, cost, idempotency_key=idem)
            if action == "infeasible":
                return self._client.infeasible(tid, wid, error, idempotency_key=idem)
            return self._client.fail(tid, wid, error, retry=retry, idempotency_key=idem)

        try:
            self._call(send)
        except ProblemError as exc:
            if exc.status in (404, 409):
                _log.warning("lease of service trial %s lost before %s: %s", tid, action, exc)
                return False
            if exc.status == 422 and action == "complete":
                return self._finish(lease, "fail", error=f"result rejected: {exc.detail}")
            raise
        except GiveUpError as exc:
            # The lease expires and the service serves the point again.
            _log.warning("could not %s service trial %s: %s", action, tid, exc.last)
        return True
