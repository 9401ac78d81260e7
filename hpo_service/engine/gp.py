"""The ``gp`` designer: Bayesian optimisation with a GP and (log) noisy expected improvement.

One request, start to finish:

1. **History → data.** Completed trials with finite values of every objective are the
   training rows. Failed trials are excluded (they say nothing about the objective).
   Trials marked ``infeasible`` are kept with the worst observed value of every
   objective and the worst observed value of every constrained metric: the model then
   learns that their region is bad and stops proposing it, without a second
   (classification) model to fit on every request. Completed trials missing a
   constrained metric are treated the same way for that metric. Objectives are turned
   to maximisation (BoTorch's convention) so ``minimize`` and ``maximize`` are handled
   by a sign.
2. **Initial design.** Until the history (finished plus pending) reaches ``n_initial``
   points, or while fewer than two rows are usable, points continue the study's Sobol
   sequence. ``n_initial`` grows with the number of parameters: ``d + 4``, within
   ``[5, 20]``.
3. **Training set.** Past ``training_cap`` rows, the best, the most recent and a
   stratified sample are kept (``training_set.py``), so cost stops growing.
4. **Model.** ``gp_model.fit_gp``: a ``SingleTaskGP`` with standardised outcomes, ARD
   Matérn-5/2 over the encoded cube (one-hot categoricals), MAP hyperparameters
   warm-started from the study's previous request.
5. **Acquisition.** One objective: ``qLogNoisyExpectedImprovement`` whose baseline is
   the 64 best rows (the incumbent is among them; a baseline of all rows costs a joint
   posterior over every row per evaluation); several:
   ``qLogNoisyExpectedHypervolumeImprovement`` with a reference point just beyond the
   observed nadir. Outcome constraints become constraint callables on extra model
   outputs (feasibility-weighted improvement). Every pending trial is ``X_pending``, so
   the proposal accounts for work in flight; ``count > 1`` is a joint q-batch.
6. **Optimisation.** ``acqf_optim.maximize_acqf`` over valid encodings only; a proposal
   that repeats a known point is replaced by the next best distinct one. So is a proposal
   within ``FAILED_RADIUS`` (per encoded coordinate) of a failed trial: failed trials
   teach the model nothing, so without this a configuration that keeps crashing (e.g. a
   diverging learning rate reported as ``fail``) is proposed again and again, each time
   a hair away from the last.
7. **Restarts (opt-in, ``GPOptions.basins``).** With one objective, the history is
   replayed to find basins the search has converged in (``basins.py``: no material
   improvement for about as many evaluations as the initial design, mostly near the
   incumbent); their rows are set aside and the acquisition function is pushed out of
   them (a ball, and the ellipsoid of the model's lengthscales around it), TuRBO-style.
   Off by default: on Hartmann-6 seed 0 it left the second basin at evaluation 44 as
   meant, but spent the last 16 evaluations on the cube's corners and stayed at regret
   0.1196, like the plain designer.

Randomness (Sobol scrambling, MC base samples, starts) is seeded from the study seed and
the history size, so the same seed and history give the same suggestions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective import logei as _mo_logei
from botorch.acquisition.multi_objective.logei import (
    qLogNoisyExpectedHypervolumeImprovement,
)
from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.multi_objective.pareto import is_non_dominated
from gpytorch.means import ZeroMean
from linear_operator.utils.warnings import NumericalWarning

from hpo_service.domain import (
    Objective,
    OutcomeConstraint,
    Params,
    StudyConfig,
    Trial,
    TrialState,
    objective_value,
)
from hpo_service.engine.acqf_optim import AcqfOptions, MixedGeometry, maximize_acqf
from hpo_service.engine.basins import (
    Basin,
    BasinOptions,
    find_basins,
    inside_basins,
    outside_basins,
)
from hpo_service.engine.believer import BelieverLogEI
from hpo_service.engine.designer import DesignerPrior, Suggestion
from hpo_service.engine.device import DTYPE, device, single_threaded, to_tensor
from hpo_service.engine.encoding import FloatArray, SpaceEncoder
from hpo_service.engine.gp_model import (
    AveragedPosteriorMean,
    HyperparameterCache,
    LengthscalePrior,
    default_cache,
    fit_gp,
)
from hpo_service.engine.random_search import SobolDesigner
from hpo_service.engine.training_set import DEFAULT_CAP, select_training_rows

__all__ = ["FAILED_RADIUS", "GPDesigner", "GPOptions", "initial_design_size"]

_MC_SAMPLES = 128
# Half-width, in encoded (unit-cube) coordinates, of the box around a failed trial that
# proposals avoid: 2% of a parameter's (log) range (a factor of 1.26 on a learning rate
# searched over five decades), small next to the basins a GP resolves, large enough that
# a crashing configuration is left after a few failures rather than dozens.
FAILED_RADIUS = 0.02


@dataclass(frozen=True)
class GPOptions:
    """Tuning knobs of the GP designer; the defaults are what the benchmarks used.

    Attributes:
        n_initial: Sobol points before the model takes over; None sizes it to the space.
        training_cap: the most rows the GP trains on.
        acqf: effort spent optimising the acquisition function.
        cache: where hyperparameters are warm-started from; None disables warm starts.
        mc_samples: quasi-MC samples of the acquisition function.
        analytic: use closed-form log EI when it is exact (one objective, no outcome
            constraints, nothing pending, one point asked for). Off by default: on
            Hartmann-6 (10 seeds, 60 evaluations) it converged faster but stalled more
            often, at the search-space boundary, than qLogNEI (mean regret 0.2 vs 0.08).
        baseline_cap: best rows qLogNEI takes as its baseline (candidates for the
            incumbent) with one objective.
        mc_raw_samples: at most this many Sobol points are scored when trials are
            pending (the perturbations around the best points come on top).
        lengthscale_prior: a prior on the lengthscales learned from earlier studies
            (set by transfer, ``transfer/prior.py``); None keeps the cube-sized default.
        prior_mean: a prior mean learned from earlier studies (the sources' GPs of
            ``transfer/source_mean.py`` as ``gp_model.AveragedPosteriorMean``; ``x ->
            mean`` on the standardised scale); None: zero.
        believer: with one objective, no outcome constraints, trials pending and one
            point asked for, score candidates by closed-form log EI with the pending
            trials believed at the model's mean (``believer.py``) instead of joint
            Monte-Carlo qLogNEI: 4-5x less per evaluation (issue #18 item 2).
        basins: when the search leaves a converged basin (one objective only); None
            (the default): never. Meant for the runs that polish Hartmann-6's second
            basin to the end (16 of 46, issue #18); not shown to help yet (point 7 of
            the module docstring; ``bench_engine_suite.py --methods gp_basins``).
    """

    n_initial: int | None = None
    training_cap: int = DEFAULT_CAP
    acqf: AcqfOptions = field(default_factory=AcqfOptions)
    cache: HyperparameterCache | None = field(default_factory=default_cache)
    mc_samples: int = _MC_SAMPLES
    analytic: bool = False
    baseline_cap: int = 64
    mc_raw_samples: int = 256
    lengthscale_prior: LengthscalePrior | None = None
    prior_mean: Callable[[torch.Tensor], torch.Tensor] | None = None
    basins: BasinOptions | None = None
    believer: bool = True

    @classmethod
    def informed(cls, prior: DesignerPrior) -> GPOptions:
        """The default options, with what earlier studies showed (``DesignerPrior``)."""
        lengthscale = None
        if prior.lengthscale is not None:
            centre, sigma = prior.lengthscale
            lengthscale = LengthscalePrior(tuple(centre), tuple(sigma))
        mean = AveragedPosteriorMean(*prior.mean) if prior.mean is not None else None
        return cls(n_initial=prior.initial_design, lengthscale_prior=lengthscale, prior_mean=mean)


def initial_design_size(n_params: int) -> int:
    """Sobol points before the GP: ``n_params + 4``, within ``[5, 20]``."""
    return min(20, max(5, n_params + 4))


@dataclass
class _Data:
    """Training data in model space.

    Attributes:
        x: ``n x d`` encoded inputs.
        y: ``n x (m + c)`` outputs: ``m`` objectives (to maximise) then ``c`` constrained
            metrics (raw).
        feasible: length-``n`` mask of rows meeting every constraint.
        number: length-``n`` trial numbers (the order the rows were observed in).
    """

    x: FloatArray
    y: FloatArray
    feasible: npt.NDArray[np.bool_]
    number: npt.NDArray[np.int64]

    def subset(self, rows: npt.NDArray[np.bool_]) -> _Data:
        """The rows where ``rows`` is true."""
        return _Data(self.x[rows], self.y[rows], self.feasible[rows], self.number[rows])


class GPDesigner:
    """Batch Bayesian optimisation with BoTorch (see the module docstring)."""

    def __init__(
        self, config: StudyConfig, seed: int | None, options: GPOptions | None = None
    ) -> None:
        self.config = config
        self.seed = seed
        self.options = options or GPOptions()
        self.encoder = SpaceEncoder(config.space)
        self.geometry = MixedGeometry.from_encoder(self.encoder)
        self.objectives: tuple[Objective, ...] = config.all_objectives
        self.constraints: tuple[OutcomeConstraint, ...] = config.constraints
        self._completed: list[Trial] = []
        self._pending: list[Trial] = []
        self._n_history = 0

    # -- Designer protocol -------------------------------------------------------------

    def update(self, completed: Sequence[Trial], pending: Sequence[Trial]) -> None:
        """Remember the history; all work happens in ``suggest``."""
        self._completed = list(completed)
        self._pending = list(pending)
        self._n_history = len(self._completed) + len(self._pending)

    def suggest(self, count: int) -> list[Suggestion]:
        """Return ``count`` new points (see the module docstring for how)."""
        if count <= 0:
            return []
        data = self._training_data()
        n_initial = self.options.n_initial or initial_design_size(len(self.config.space.names))
        if len(data.y) < 2 or self._n_history < n_initial:
            return self._initial(count)
        basins = self._basins(data, n_initial)
        if basins:
            # The basin's rows are set aside (TuRBO's restart): trained on them, the model
            # keeps their long lengthscales and proposes the cube's corners (seed 0).
            outside = ~inside_basins(data.x, basins)
            if (outside & data.feasible).sum() >= 2:
                data = data.subset(outside)
        with single_threaded(), warnings.catch_warnings():
            # A nearly noise-free GP has posterior covariances at observed points of the
            # order of the noise floor; linear_operator then adds a little jitter and
            # warns. That is expected here and not actionable by a user.
            warnings.simplefilter("ignore", NumericalWarning)
            return self._model_based(count, data, basins)

    # -- steps -------------------------------------------------------------------------

    def _initial(self, count: int) -> list[Suggestion]:
        sobol = SobolDesigner(self.config, self.seed)
        sobol.update(self._completed, self._pending)
        return [
            Suggestion(s.params, s.source, {**s.metadata, "designer": "gp", "phase": "initial"})
            for s in sobol.suggest(count)
        ]

    def _basins(self, data: _Data, n_initial: int) -> list[Basin]:
        """Converged basins of the single objective (``basins.py``); none with several."""
        if self.options.basins is None or len(self.objectives) != 1:
            return []
        order = np.argsort(data.number, kind="stable")
        y = np.where(data.feasible, data.y[:, 0], np.nan)[order]
        return find_basins(data.x[order], y, start=n_initial, options=self.options.basins)

    def _request_seed(self) -> int:
        if self.seed is None:
            return int(np.random.default_rng().integers(2**31))
        digest = hashlib.sha256(f"{self.seed}:{self._n_history}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def _training_data(self) -> _Data:
        rows: list[tuple[Params, list[float | None], bool]] = []
        numbers: list[int] = []
        for t in self._completed:
            if t.state == TrialState.COMPLETED:
                values = [objective_value(o, t.result) for o in self.objectives]
                if any(v is None for v in values):
                    continue
                cons = [_metric(t.result, c.metric) for c in self.constraints]
                rows.append((t.params, [*values, *cons], False))
            elif t.state == TrialState.INFEASIBLE:
                rows.append(
                    (t.params, [None] * (len(self.objectives) + len(self.constraints)), True)
                )
            else:
                continue
            numbers.append(t.number)
        m = len(self.objectives)
        dim = self.encoder.dim
        if not any(not infeasible for _, _, infeasible in rows):
            return _Data(
                np.zeros((0, dim)),
                np.zeros((0, m + len(self.constraints))),
                np.zeros(0, bool),
                np.zeros(0, np.int64),
            )
        raw = np.array(
            [[np.nan if v is None else v for v in values] for _, values, _ in rows],
            dtype=np.float64,
        )
        signs = np.array([-o.sign() for o in self.objectives])
        raw[:, :m] *= signs
        for j in range(raw.shape[1]):
            col = raw[:, j]
            if j < m:
                worst = np.nanmin(col) if np.isfinite(col).any() else 0.0
            else:
                c = self.constraints[j - m]
                finite = col[np.isfinite(col)]
                if len(finite) == 0:
                    worst = c.bound + (1.0 if c.op == "<=" else -1.0)
                else:
                    worst = float(finite.max() if c.op == "<=" else finite.min())
                    worst = max(worst, c.bound) if c.op == "<=" else min(worst, c.bound)
            col[~np.isfinite(col)] = worst
        x = self.encoder.encode_many([p for p, _, _ in rows])
        feasible = np.ones(len(rows), dtype=bool)
        for j, c in enumerate(self.constraints):
            feasible &= np.array([c.satisfied(float(v)) for v in raw[:, m + j]], dtype=bool)
        feasible &= np.array([not inf for _, _, inf in rows], dtype=bool)
        return _Data(x, raw, feasible, np.asarray(numbers, dtype=np.int64))

    def _scores(self, data: _Data) -> FloatArray:
        """Lower is better, one per row, for choosing the training set and anchors."""
        m = len(self.objectives)
        obj = data.y[:, :m]
        ranks = np.argsort(np.argsort(-obj, axis=0, kind="stable"), axis=0, kind="stable")
        score = ranks.min(axis=1).astype(np.float64)
        # Infeasible rows rank after every feasible one.
        return np.asarray(score + np.where(data.feasible, 0.0, len(score)), dtype=np.float64)

    def _model_based(self, count: int, data: _Data, basins: list[Basin]) -> list[Suggestion]:
        seed = self._request_seed()
        rng = np.random.default_rng(seed)
        scores = self._scores(data)
        keep = select_training_rows(scores, self.options.training_cap, seed=seed)
        x = to_tensor(data.x[keep])
        model, hypers = fit_gp(
            x,
            to_tensor(data.y[keep]),
            cache=self.options.cache,
            cache_key=self._cache_key(),
            n_total=len(data.y),
            learned=self.options.lengthscale_prior,
            mean=self.options.prior_mean,
        )
        pending_x = self._pending_x()
        # BoTorch prunes the baseline with an unseeded sampler (it draws a seed from
        # torch's global generator); a forked, seeded generator makes that reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            acqf, name = self._acquisition(
                model, x, data, keep, pending_x, seed, count, scores[keep]
            )
        lengthscales = hypers[0].lengthscales
        reach = self.options.basins.reach if self.options.basins else 0.0
        acqf = outside_basins(acqf, basins, lengthscales, reach)
        # Perturbations of the best rows start the search; inside a basin they would
        # all be penalised, so the best rows outside every basin stand in.
        away = np.where(inside_basins(data.x, basins), np.inf, scores) if basins else scores
        top = np.argsort(away, kind="stable")[:5]
        found = maximize_acqf(
            acqf,
            self.geometry,
            self.encoder.project,
            count,
            rng=rng,
            anchors=data.x[top][data.feasible[top]] if data.feasible[top].any() else data.x[top],
            lengthscales=lengthscales,
            options=self._acqf_options(len(pending_x), name),
        )
        chosen = self._distinct(found.batches[0], found.ranked, data.x, pending_x, self._failed_x())
        meta: dict[str, Any] = {"designer": "gp", "acquisition": name, "n_train": len(keep)}
        if basins:
            meta["basins_set_aside"] = len(basins)
        return [Suggestion(self.encoder.decode(row), metadata=dict(meta)) for row in chosen]

    def _acqf_options(self, n_pending: int, acquisition: str) -> AcqfOptions:
        """The optimiser's effort: fewer scored Sobol points for joint Monte-Carlo scores.

        With pending points qLogNEI evaluates every candidate jointly with all of them,
        so scoring the raw points was half of such a request; the perturbations around
        the best points (where most proposals come from late in a study) are kept. The
        believer's closed form costs little per point, so it scores them all.
        """
        opts = self.options.acqf
        if n_pending == 0 or acquisition == "BelieverLogEI":
            return opts
        return dataclasses.replace(
            opts, raw_samples=min(opts.raw_samples, self.options.mc_raw_samples)
        )

    def _failed_x(self) -> FloatArray:
        return self.encoder.encode_many(
            [t.params for t in self._completed if t.state == TrialState.FAILED]
        )

    def _pending_x(self) -> FloatArray:
        return self.encoder.encode_many([t.params for t in self._pending])

    def _acquisition(
        self,
        model: Any,
        x: torch.Tensor,
        data: _Data,
        keep: npt.NDArray[np.int64],
        pending_x: FloatArray,
        seed: int,
        count: int,
        kept_scores: FloatArray,
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
        m = len(self.objectives)
        sampler = SobolQMCNormalSampler(
            sample_shape=torch.Size([self.options.mc_samples]), seed=seed
        )
        x_pending = to_tensor(pending_x) if len(pending_x) else None
        constraints = [_constraint_fn(m + j, c) for j, c in enumerate(self.constraints)]
        exact = m == 1 and not constraints and x_pending is None and count == 1
        if (
            self.options.believer
            and m == 1
            and not constraints
            and x_pending is not None
            and count == 1
            and isinstance(model.mean_module, ZeroMean)
        ):
            # Pending trials as believed observations, closed form (``believer.py``):
            # the joint Monte-Carlo qLogNEI below was 80% of such a request.
            return BelieverLogEI.from_model(model, x_pending), "BelieverLogEI"
        if exact and self.options.analytic:
            # Deterministic and smooth: no Monte-Carlo error in the surface the optimiser
            # climbs. The incumbent is the best observed value.
            best_f = float(data.y[keep][:, 0].max())
            return LogExpectedImprovement(model=model, best_f=best_f), "LogEI"
        if m == 1:
            objective = GenericMCObjective(_first_output) if constraints else None
            # The incumbent is one of the best rows: a baseline of all n rows costs a joint
            # posterior over n points per evaluation (at n = 600, most of a request) for
            # the same answer.
            best_rows = np.argsort(kept_scores, kind="stable")[: self.options.baseline_cap]
            single = qLogNoisyExpectedImprovement(
                model=model,
                X_baseline=x[torch.as_tensor(np.sort(best_rows), device=x.device)],
                sampler=sampler,
                objective=objective,
                X_pending=x_pending,
                constraints=constraints or None,
                prune_baseline=True,
                # Caching the baseline's Cholesky root makes each evaluation a low-rank
                # update (30% of a request at n = 10,000). With constraints the model has
                # several outputs and that path trips a torch sparse-tensor warning.
                cache_root=not constraints,
            )
            return single, "qLogNEI"
        _no_kernel_compilation()
        feasible_y = data.y[keep][:, :m][data.feasible[keep]]
        ref = _reference_point(feasible_y if len(feasible_y) else data.y[keep][:, :m])
        multi = qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=ref.tolist(),
            X_baseline=x,
            sampler=sampler,
            objective=(
                IdentityMCMultiOutputObjective(outcomes=list(range(m))) if constraints else None
            ),
            constraints=constraints or None,
            X_pending=x_pending,
            prune_baseline=True,
            cache_root=False,
        )
        return multi, "qLogNEHVI"

    def _distinct(
        self,
        batch: FloatArray,
        ranked: FloatArray,
        known: FloatArray,
        pending: FloatArray,
        failed: FloatArray,
    ) -> list[FloatArray]:
        """The batch, with unusable points replaced by the next best candidates.

        Unusable: repeating a known or already chosen point, or within ``FAILED_RADIUS``
        of a failed trial. Sobol points fill in when no candidate is left.
        """
        seen = {_key(row) for row in np.vstack([known, pending]) if len(row)}

        def usable(row: FloatArray) -> bool:
            if _key(row) in seen:
                return False
            return not len(failed) or bool(
                (np.abs(failed - row).max(axis=-1) > FAILED_RADIUS).all()
            )

        out: list[FloatArray] = []
        for row in [*batch, *ranked]:
            if len(out) == len(batch):
                break
            if usable(row):
                seen.add(_key(row))
                out.append(row)
        if len(out) < len(batch):
            # Every candidate repeats a known point or sits on a failed one: a small
            # discrete space nearly exhausted, or a model that only wants the failed spot.
            # Fill with Sobol points, which repeat only when the space is exhausted.
            extra = self._initial(len(batch) - len(out))
            out.extend(self.encoder.encode(s.params) for s in extra)
        return out

    def _cache_key(self) -> str:
        # The study id keeps two studies with the same space from sharing warm starts
        # (and a large study from skipping a refit on another study's hyperparameters).
        trials = self._completed or self._pending
        payload = {
            "study": trials[0].study_id if trials else "",
            "space": self.config.space.model_dump(mode="json"),
            "objectives": [o.model_dump(mode="json") for o in self.objectives],
            "constraints": [c.model_dump(mode="json") for c in self.constraints],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _no_kernel_compilation() -> None:
    """Stop qLogNEHVI from compiling its optional C++ kernel inside a request.

    BoTorch JIT-compiles that kernel with ninja on first use when no prebuilt one is
    installed: minutes of compiler time inside a suggestion request, and a lock file that
    blocks every later process if the compile is interrupted. The pure-torch path it
    falls back to is what we measured. Marking the load as attempted skips it.
    """
    if hasattr(_mo_logei, "_load_attempted"):
        _mo_logei._load_attempted = True


def _metric(result: dict[str, float] | None, name: str) -> float | None:
    if not result or name not in result:
        return None
    value = result[name]
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _key(row: FloatArray) -> bytes:
    return np.round(np.asarray(row, dtype=np.float64), 9).tobytes()


def _first_output(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
    return samples[..., 0]


def _constraint_fn(column: int, c: OutcomeConstraint) -> Callable[[torch.Tensor], torch.Tensor]:
    """BoTorch constraint callable: non-positive where ``c`` holds."""
    bound = c.bound
    if c.op == "<=":
        return lambda samples: samples[..., column] - bound
    return lambda samples: bound - samples[..., column]


def _reference_point(y: FloatArray) -> FloatArray:
    """A point just worse than the observed Pareto front's nadir (maximisation)."""
    front = y[to_numpy_mask(is_non_dominated(torch.as_tensor(y, dtype=DTYPE, device=device())))]
    lo, hi = y.min(axis=0), front.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.asarray(front.min(axis=0) - 0.1 * span, dtype=np.float64)


def to_numpy_mask(mask: torch.Tensor) -> npt.NDArray[np.bool_]:
    """A boolean tensor as a host numpy mask."""
    return np.asarray(mask.detach().cpu().numpy(), dtype=bool)
