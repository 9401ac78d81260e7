"""``HPOServiceSearcher``: a Ray Tune search algorithm whose suggestions come from the service.

Tune keeps doing what it is good at (placing trials on a cluster, schedulers,
checkpoints); the service decides what to try and keeps the history, so a Tune run gets
the service's GP, transfer from earlier studies of the family and its dashboard, and
the study outlives the Tune run.

How Tune's calls map onto the API:

- ``set_search_properties(metric, mode, config)`` (or the ``space`` argument): Tune's
  domains become the service's space JSON (``convert_search_space``) and the study is
  created, unless one was named with ``study_id``;
- ``suggest(trial_id)``: leases one trial under a worker id of its own for that Tune
  trial (``<worker_prefix><trial_id>``), so the service's "own active trials first" rule
  never hands one Tune trial another's parameters;
- ``on_trial_result`` posts a measurement (step = ``training_iteration``);
- ``on_trial_complete`` completes the trial, or fails it when Tune reports an error or the
  objective is missing or not finite;
- ``save``/``restore`` keep the study id, the Tune trial → service trial map and the space
  conversion.

Leases are kept alive by a background heartbeat thread, not by a long lease. The lease
length is the server's setting (``HPO_LEASE_SECONDS``), not something a client may ask
for, and no lease is long enough for every Tune trial: results can be far apart (a long
epoch) and a scheduler may pause a trial for hours. A heartbeat every third of the
granted lease keeps any trial alive while the Tune driver lives, and when the driver dies
its trials return to ``requested`` one lease later instead of after a day. The thread
runs only while leases are held.

The API key is never written anywhere: not into ``save``'s checkpoint and not into the
pickle Tune makes of the searcher (``tuner.pkl``). A searcher restored by
``Tuner.restore`` reads ``HPO_API_KEY``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from ray.air.constants import TRAINING_ITERATION
from ray.tune.result import AUTO_RESULT_KEYS, TIME_TOTAL_S
from ray.tune.search import Searcher
from ray.tune.search.sample import (
    Categorical,
    Domain,
    Float,
    Integer,
    LogUniform,
    Quantized,
    Uniform,
)

from hpo_service.client.backoff import Backoff, GiveUpError, retry_call
from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.client.models import Study, Trial

__all__ = ["MAX_GRID", "HPOServiceSearcher", "ServiceSpace", "convert_search_space"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]

MAX_GRID = 1000
"""Most values a quantized domain may have; it becomes an ordinal that lists them all."""

_STATE_VERSION = 1
_UNFINISHED = ("requested", "active", "stopping")
_GOALS = {"min": "minimize", "max": "maximize"}


# Search space ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Param:
    """One service parameter and how to turn its value back into Tune's.

    ``cast`` is ``int`` or ``float`` for numeric domains (JSON may carry ``3.0`` for an
    integer or ``3`` for a float), ``choice`` for a categorical, whose original values
    ``choices`` holds in the order of the service's string choices (the service only has
    string categoricals), and ``none`` to pass the value on as it is.
    """

    name: str
    path: tuple[str, ...]
    cast: Literal["int", "float", "choice", "none"] = "none"
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ServiceSpace:
    """A Tune search space as the service sees it, plus the way back.

    Attributes:
        json: ``{"parameters": [...]}`` as API.md's study body wants it.
        params: one entry per service parameter, in the same order.
    """

    json: JSON
    params: tuple[_Param, ...]

    def decode(self, values: Mapping[str, Any]) -> JSON:
        """Turn a trial's ``params`` into Tune's (nested) config.

        Raises:
            KeyError: a parameter the trial lacks (the study's space changed).
        """
        config: JSON = {}
        for param in self.params:
            value = values[param.name]
            if param.cast == "choice":
                value = param.choices[[str(c) for c in param.choices].index(value)]
            elif param.cast == "int":
                value = round(value)
            elif param.cast == "float":
                value = float(value)
            node = config
            for key in param.path[:-1]:
                node = node.setdefault(key, {})
            node[param.path[-1]] = value
        return config


def _grid(lower: float, upper: float, q: float, *, integer: bool) -> list[float]:
    """The multiples of ``q`` in ``[lower, upper]``: Tune's quantized values.

    Raises:
        ValueError: no multiple in range, or more than ``MAX_GRID`` of them.
    """
    first = math.ceil(lower / q - 1e-9)
    last = math.floor(upper / q + 1e-9)
    if last < first:
        raise ValueError(f"no multiple of q={q} lies in [{lower}, {upper}]")
    if last - first + 1 > MAX_GRID:
        raise ValueError(
            f"q={q} gives {last - first + 1} values in [{lower}, {upper}] (at most {MAX_GRID}); "
            "use an unquantized domain"
        )
    if integer:
        return [int(k * q) for k in range(first, last + 1)]
    return [round(k * q, 12) for k in range(first, last + 1)]


def _numeric_domain(name: str, domain: Float | Integer) -> tuple[JSON, bool]:
    """The service parameter for a float or integer domain; whether values are ints."""
    sampler = domain.sampler or domain.default_sampler_cls()
    q = None
    if isinstance(sampler, Quantized):
        q, sampler = sampler.q, sampler.sampler
    if not isinstance(sampler, LogUniform | Uniform):
        raise ValueError(f"{name}: Tune sampler {sampler} has no bounded service equivalent")
    scale = "log" if isinstance(sampler, LogUniform) else "linear"
    integer = isinstance(domain, Integer)
    if q is not None and not (integer and q == 1):
        values = _grid(domain.lower, domain.upper, q, integer=integer)
        return {"name": name, "type": "ordinal", "values": values, "scale": scale}, integer
    if integer:
        # Tune's integer upper bound is exclusive unless quantized by q != 1.
        low, high = int(domain.lower), int(domain.upper) - 1
        return {"name": name, "type": "int", "low": low, "high": high, "scale": scale}, True
    spec = {"name": name, "type": "float", "low": domain.lower, "high": domain.upper}
    return {**spec, "scale": scale}, False


def _convert(name: str, path: tuple[str, ...], domain: Domain) -> tuple[JSON, _Param]:
    if isinstance(domain, Categorical):
        labels = [str(c) for c in domain.categories]
        if len(set(labels)) != len(labels):
            raise ValueError(f"{name}: choices {domain.categories} are not distinct as strings")
        spec: JSON = {"name": name, "type": "categorical", "choices": labels}
        return spec, _Param(name, path, "choice", tuple(domain.categories))
    if isinstance(domain, Float | Integer):
        spec, integer = _numeric_domain(name, domain)
        return spec, _Param(name, path, "int" if integer else "float")
    raise ValueError(
        f"{name}: {type(domain).__name__} domains (sample_from) cannot be searched by the "
        "service; use uniform, loguniform, randint, choice or quniform"
    )


def _walk(config: Mapping[str, Any], path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """Every Domain (or grid search) in a nested Tune config, with its key path."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in config.items():
        here = (*path, str(key))
        if isinstance(value, Mapping) and "grid_search" in value:
            raise ValueError(f"{'.'.join(here)}: grid_search cannot be searched by the service")
        if isinstance(value, Mapping):
            found.extend(_walk(value, here))
        elif isinstance(value, Domain):
            found.append((here, value))
    return found


def convert_search_space(config: Mapping[str, Any]) -> ServiceSpace:
    """Tune's param space → the service's space JSON; constants stay with Tune.

    ``loguniform``/``uniform`` become floats, ``randint``/``lograndint`` ints (Tune's
    exclusive upper bound made inclusive), ``choice`` a categorical of the choices as
    strings (decoded back to the original objects), and quantized domains
    (``quniform``, ``qloguniform``, ``qrandint``) ordinals listing Tune's grid, so the
    service suggests exactly the values Tune would run. Nested keys join with ``.``.

    Raises:
        ValueError: a domain the service cannot express (normal, sample_from,
            grid_search), a key outside the service's name pattern, or no domain at all.
    """
    specs: list[JSON] = []
    params: list[_Param] = []
    for path, domain in _walk(config, ()):
        name = ".".join(path)
        if not name or len(name) > 128 or not all(c.isalnum() or c in "_.-" for c in name):
            raise ValueError(f"{name!r}: the service's names are [A-Za-z0-9_.-]{{1,128}}")
        spec, param = _convert(name, path, domain)
        specs.append(spec)
        params.append(param)
    if not specs:
        raise ValueError("the Tune config has no search domain (tune.uniform, tune.choice, ...)")
    if len({p.name for p in params}) != len(params):
        raise ValueError("two config keys map to the same service parameter name")
    return ServiceSpace({"parameters": specs}, tuple(params))


def _flat_space(study: Study) -> ServiceSpace:
    """Decoding for a study this searcher did not create: service names as flat keys."""
    casts: dict[str, Literal["int", "float"]] = {"int": "int", "float": "float"}
    params = tuple(
        _Param(p.name, (p.name,), casts.get(p.type, "none")) for p in study.space.parameters
    )
    return ServiceSpace(study.space.model_dump(exclude_none=True), params)


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The user's finite numeric metrics in a Tune result.

    Tune's own keys are left out, and so is the config, which Tune flattens into the
    result as ``config/<key>`` entries: they are parameters, not measurements.
    """
    return {
        k: float(v)
        for k, v in result.items()
        if k not in AUTO_RESULT_KEYS
        and not k.startswith("config/")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


# Searcher ------------------------------------------------------------------------------------
@dataclass
class _Lease:
    trial_id: str
    worker_id: str
    lost: bool = False


class HPOServiceSearcher(Searcher):
    """A Tune ``Searcher`` that leases its configurations from an hpo_service study.

    Args:
        server: the service's base URL (default ``$HPO_SERVER`` or localhost:8000).
        api_key: a key of role client (to create the study) or worker (for an existing
            study); default ``$HPO_API_KEY``.
        metric: the objective; default Tune's ``TuneConfig(metric=...)``, or the study's.
        mode: ``min`` or ``max``; default Tune's, or the study's goal.
        space: a Tune param space to search; default the one ``Tuner(param_space=...)``
            passes through ``set_search_properties``.
        study_id: work on this existing study instead of creating one.
        study: more fields for the created study (``name``, ``algorithm``, ``seed``,
            ``max_trials``, ``family``, ``transfer``, ``scale``, ``metadata``, ...).
        worker_prefix: put before each Tune trial id to make its worker id.
        heartbeat_seconds: the longest interval between heartbeats (shortened to a third
            of the lease the service grants).
        retry_deadline: seconds to keep retrying a call while the service is unreachable.
    """

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        metric: str | None = None,
        mode: str | None = None,
        space: Mapping[str, Any] | None = None,
        study_id: str | None = None,
        study: Mapping[str, Any] | None = None,
        worker_prefix: str = "tune-",
        heartbeat_seconds: float = 30.0,
        retry_deadline: float = 300.0,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.server = server or os.environ.get("HPO_SERVER", "http://127.0.0.1:8000")
        self._api_key = api_key or os.environ.get("HPO_API_KEY")
        self._space = convert_search_space(space) if space is not None else None
        self.study_id = study_id
        self._study_spec = dict(study or {})
        self._worker_prefix = worker_prefix
        self._heartbeat_seconds = heartbeat_seconds
        self._retry_deadline = retry_deadline
        self._create_key = f"tune-study-{uuid.uuid4().hex}"
        self._leases: dict[str, _Lease] = {}
        self._interval = heartbeat_seconds
        self._next_poll = 0.0
        self._transient()

    def _transient(self) -> None:
        """The parts that never leave the process: connection, lock, heartbeat thread."""
        self._client: HPOClient | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._beat: threading.Thread | None = None

    # Pickling (Tune pickles the searcher into tuner.pkl) ----------------------------------
    def __getstate__(self) -> JSON:
        state = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("_client", "_lock", "_wake", "_beat", "_api_key")
        }
        state["_leases"] = dict(self._leases)
        return state

    def __setstate__(self, state: JSON) -> None:
        self.__dict__.update(state)
        self._api_key = os.environ.get("HPO_API_KEY")
        self._next_poll = 0.0  # a monotonic time means nothing in another process
        self._transient()
        self._ensure_heartbeats()

    # Service calls ----------------------------------------------------------------------
    @property
    def client(self) -> HPOClient:
        """One connection for Tune's thread and the heartbeat thread (httpx is thread-safe).

        Raises:
            RuntimeError: no API key (keys are never pickled: set ``HPO_API_KEY``).
        """
        if self._client is None:
            if not self._api_key:
                raise RuntimeError(
                    "HPOServiceSearcher has no API key: pass api_key= or set HPO_API_KEY "
                    "(keys are never written into Tune's checkpoints)"
                )
            self._client = HPOClient(self.server, self._api_key)
        return self._client

    def _call(self, fn: Callable[[HPOClient], T], *, deadline: float | None = None) -> T:
        """Retry network errors and 5xx with backoff; raise other 4xx at once."""
        policy = Backoff(base=0.5, cap=10.0, deadline=deadline or self._retry_deadline)
        return retry_call(lambda: fn(self.client), policy)

    # Study ------------------------------------------------------------------------------
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: JSON, **spec: Any
    ) -> bool:
        """Take Tune's metric, mode and param space; create the study if none exists yet.

        Returns:
            False when this searcher already has a space (given to it, restored, or an
            existing study's): Tune then checks that ``param_space`` holds no domains.
        """
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        if self._space is not None or self.study_id is not None:
            if self.study_id is not None:
                self._check_objective(self._read_study())
            return False
        if not _walk(config, ()):
            return False
        self._space = convert_search_space(config)
        self._ensure_study()
        return True

    def _read_study(self) -> Study:
        assert self.study_id is not None
        study_id = self.study_id
        return self._call(lambda c: c.studies.get(study_id))

    def _check_objective(self, study: Study) -> None:
        """Adopt or check metric and mode against an existing study's objective.

        Raises:
            ValueError: Tune optimises something else than the study: every completion
                would be refused for lack of the study's metric.
        """
        goal = study.objective.goal
        if self._metric is None:
            self._metric = study.objective.metric
        if self._mode is None:
            self._mode = "max" if goal == "maximize" else "min"
        if self._metric != study.objective.metric or _GOALS.get(self._mode) != goal:
            raise ValueError(
                f"Tune optimises {self._metric} ({self._mode}) but study {study.id} "
                f"{goal}s {study.objective.metric}"
            )

    def _ensure_study(self) -> str:
        """The study id, creating the study from the converted space the first time.

        Raises:
            ValueError: no metric, or no space to create a study from.
        """
        if self.study_id is not None:
            if self._space is None:
                study = self._read_study()
                self._check_objective(study)
                self._space = _flat_space(study)
            return self.study_id
        if self._space is None:
            raise ValueError(
                "HPOServiceSearcher has no search space: pass space=, study_id= or "
                "Tuner(param_space=...)"
            )
        if not self._metric:
            raise ValueError("HPOServiceSearcher needs a metric: metric= or TuneConfig(metric=)")
        mode = self._mode or "min"
        if mode not in _GOALS:
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self._mode = mode
        body = {
            "name": "ray-tune",
            **self._study_spec,
            "objective": {"metric": self._metric, "goal": _GOALS[mode]},
            "space": self._space.json,
        }
        # One key for every retry: a creation that landed before the connection broke is
        # answered again instead of creating a second study.
        key = self._create_key
        created = self._call(lambda c: c.studies.create(body, idempotency_key=key))
        self.study_id = created.id
        logger.info("HPOServiceSearcher: created study %s", created.id)
        return created.id

    # Tune's calls -----------------------------------------------------------------------
    # Tune's annotation omits the FINISHED string its own docstring asks for.
    def suggest(self, trial_id: str) -> JSON | str | None:  # type: ignore[override]
        """Lease one trial for this Tune trial and return its config.

        Returns:
            The config; ``Searcher.FINISHED`` when the study is completed, or its
            ``max_trials`` are all created and finished; None when nothing can be
            leased now (paused, or every remaining trial is running): Tune asks again.
        """
        study_id = self._ensure_study()
        assert self._space is not None
        now = time.monotonic()
        if now < self._next_poll:
            return None
        worker_id = f"{self._worker_prefix}{trial_id}"
        batch = self._call(lambda c: c.trials.suggest(study_id, worker_id, 1))
        if not batch.trials:
            return self._nothing_leased(study_id, batch.study_state, now)
        trial = batch.trials[0]
        with self._lock:
            self._leases[trial_id] = _Lease(trial.id, worker_id)
            self._interval = self._beat_interval(trial)
        self._ensure_heartbeats()
        return self._space.decode(trial.params)

    def _nothing_leased(self, study_id: str, study_state: str, now: float) -> str | None:
        if study_state == "completed":
            return str(Searcher.FINISHED)
        study = self._call(lambda c: c.studies.get(study_id))
        unfinished = sum(study.trial_counts.get(s, 0) for s in _UNFINISHED)
        if study.state == "active" and study.max_trials is not None and unfinished == 0:
            return str(Searcher.FINISHED)
        self._next_poll = now + 1.0  # Tune polls in a tight loop; the service need not
        return None

    def on_trial_result(self, trial_id: str, result: JSON) -> None:
        """Post the result as a measurement; a lost one is only a lost point on a curve."""
        lease = self._leases.get(trial_id)
        metrics = result_metrics(result)
        if lease is None or lease.lost or not metrics:
            return
        step = int(result.get(TRAINING_ITERATION, 0))
        elapsed = result.get(TIME_TOTAL_S)
        try:
            self._call(
                lambda c: c.trials.report(lease.trial_id, lease.worker_id, step, metrics, elapsed),
                deadline=15.0,
            )
        except GiveUpError as exc:
            logger.warning("measurement of %s dropped: %s", lease.trial_id, exc.last)
        except ProblemError as exc:
            self._lease_problem(lease, exc)

    def on_trial_complete(
        self, trial_id: str, result: JSON | None = None, error: bool = False
    ) -> None:
        """Complete the service trial with the final result, or fail it.

        Tune has already retried an errored trial as its ``FailureConfig`` asked, so a
        failure is final (``retry: false``): the service does not hand the same
        parameters out again.
        """
        with self._lock:
            lease = self._leases.pop(trial_id, None)
        if lease is None or lease.lost:
            return
        outcome = self._outcome(result, error)
        key = f"tune-{lease.trial_id}-{uuid.uuid4().hex}"
        try:
            self._finish(lease, outcome, key)
        except GiveUpError as exc:
            logger.error("trial %s: result never reached the service: %s", lease.trial_id, exc)
        except ProblemError as exc:
            if exc.status == 422 and outcome[0] == "complete":
                self._finish(lease, ("fail", f"result rejected: {exc.detail}"), key + "-fail")
            else:
                self._lease_problem(lease, exc)

    def _outcome(self, result: JSON | None, error: bool) -> tuple[str, Any]:
        if error or result is None:
            return "fail", "Ray Tune reported the trial as errored"
        metrics = result_metrics(result)
        if self._metric not in metrics:
            raw = result.get(self._metric) if self._metric else None
            return "fail", f"the final result has no finite {self._metric!r} (got {raw!r})"
        return "complete", (metrics, {"wall_seconds": result.get(TIME_TOTAL_S)})

    def _finish(self, lease: _Lease, outcome: tuple[str, Any], key: str) -> Trial:
        action, payload = outcome
        tid, wid = lease.trial_id, lease.worker_id
        if action == "complete":
            metrics, cost = payload
            return self._call(
                lambda c: c.trials.complete(tid, wid, metrics, cost, idempotency_key=key)
            )
        return self._call(lambda c: c.trials.fail(tid, wid, payload, idempotency_key=key))

    def _lease_problem(self, lease: _Lease, exc: ProblemError) -> None:
        if exc.status in (404, 409):
            lease.lost = True
            logger.warning(
                "trial %s: the lease is lost (%s); its results are no longer recorded",
                lease.trial_id,
                exc.slug,
            )
        else:
            logger.warning("trial %s: the service refused a call: %s", lease.trial_id, exc)

    # Heartbeats ---------------------------------------------------------------------------
    def _beat_interval(self, trial: Trial) -> float:
        """A third of the lease the service granted, at most ``heartbeat_seconds``."""
        interval = self._heartbeat_seconds
        expires = trial.lease_expires_at
        if expires is not None:
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            interval = min(interval, (expires - datetime.now(UTC)).total_seconds() / 3)
        return max(0.25, interval)

    def _ensure_heartbeats(self) -> None:
        with self._lock:
            if self._beat is not None and self._beat.is_alive():
                self._wake.notify()
                return
            if not any(not lease.lost for lease in self._leases.values()):
                return
            self._beat = threading.Thread(target=self._heartbeat_loop, daemon=True)
            self._beat.start()

    def _heartbeat_loop(self) -> None:
        """Heartbeat every held lease each interval; exit when none is held."""
        while True:
            with self._lock:
                live = [lease for lease in self._leases.values() if not lease.lost]
                if not live:
                    self._beat = None
                    return
                interval = self._interval
            for lease in live:
                self._heartbeat(lease)
            with self._lock:
                self._wake.wait(interval)

    def _heartbeat(self, lease: _Lease) -> None:
        try:
            self._call(
                lambda c: c.trials.heartbeat(lease.trial_id, lease.worker_id),
                deadline=self._interval,
            )
        except GiveUpError as exc:
            logger.warning("heartbeat of %s failed: %s", lease.trial_id, exc.last)
        except ProblemError as exc:
            with self._lock:
                held = any(held is lease for held in self._leases.values())
            if held:  # else Tune finished the trial while this heartbeat was on its way
                self._lease_problem(lease, exc)

    def close(self) -> None:
        """Hand every lease still held back to the service and stop heartbeating.

        For a process that lives on after ``Tuner.fit()`` was interrupted (a notebook):
        Tune stops its trials without telling the searcher, whose heartbeats would keep
        their trials ``active`` for as long as the process lives. A process that exits
        needs no ``close``: its leases expire. The searcher stays usable afterwards.
        """
        with self._lock:
            leases = [lease for lease in self._leases.values() if not lease.lost]
            self._leases.clear()
            self._wake.notify_all()
            beat = self._beat
        if beat is not None:
            beat.join(timeout=self._interval + 5.0)
        for lease in leases:
            self._release(lease)

    def _release(self, lease: _Lease) -> None:
        tid, wid = lease.trial_id, lease.worker_id
        try:
            self._call(
                lambda c: c.trials.fail(tid, wid, "the Tune searcher was closed", retry=True),
                deadline=15.0,
            )
        except (GiveUpError, ProblemError) as exc:  # finished meanwhile, or unreachable
            logger.info("trial %s not released: %s", tid, exc)

    # Checkpoints --------------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        """Write the study id, the trial map and the space conversion (never the key)."""
        with self._lock:
            leases = {t: (x.trial_id, x.worker_id) for t, x in self._leases.items() if not x.lost}
        state = {
            "version": _STATE_VERSION,
            "study_id": self.study_id,
            "metric": self._metric,
            "mode": self._mode,
            "space": self._space,
            "leases": leases,
            "worker_prefix": self._worker_prefix,
        }
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Take back what ``save`` wrote and resume heartbeating the leases in it.

        Raises:
            ValueError: the file was written by an incompatible version.
        """
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown HPOServiceSearcher state version {state.get('version')}")
        self.study_id = state["study_id"]
        self._metric = state["metric"]
        self._mode = state["mode"]
        self._space = state["space"]
        self._worker_prefix = state["worker_prefix"]
        with self._lock:
            self._leases = {t: _Lease(tid, wid) for t, (tid, wid) in state["leases"].items()}
        self._ensure_heartbeats()
