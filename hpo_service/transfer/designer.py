"""A designer wrapper that searches inside a learned region (TRANSFER.md, Using the region).

``RegionDesigner`` wraps any designer without widening the designer interface:

1. **Seeds first.** The sources' best configurations, mapped into the new space, are
   proposed before anything else, tagged ``transfer_seed``, in the order given (the
   service puts the best-supported first, ``seeds.py``). With ``seed_phase`` set, the
   seeds stop once that many trials of the history lie inside the region: they serve as
   the inner model's initial design, and past it the model's proposals beat the
   remaining, less supported, seeds.
2. **Narrowed space.** The inner designer is built for a copy of the study whose space is
   the region's bounding box in natural units (int ranges, ordinal grids and categorical
   choices cut to what the region keeps). A GP therefore normalises its inputs to the box
   automatically and optimises its acquisition only there, and Sobol/random sample only
   there. The inner designer sees the trials that lie in the box.
   Once the model has data, it searches a **trust region** around the incumbent inside
   the region (``exploit.py``; every other proposal still covers the whole region): the
   region is already good, so what is left is local refinement, which a GP spread over
   the whole region does slowly.
3. **Inside the ellipsoid.** A box needs nothing more. For an ellipsoid, space-filling
   designers are asked for extra points and the ones outside are rejected; model-based
   designers' proposals outside are pulled radially onto the ellipsoid (sample-and-refine,
   the acquisition optimum usually lies on that boundary). A bounded number of tries,
   then a uniform sample of the region tagged ``fallback_random``.
4. **Negative-transfer guard.** When the target's own data show the optimum pressing on
   the region's boundary, or the best point inside is clearly worse than one outside,
   the region is grown (half-widths and semi-axes doubled) up to ``max_level`` times. The
   level is stored in each new trial's metadata, so an expansion is recorded with the
   study, sticks across requests and restarts, and is explained on the trial that caused
   it.

The wrapper is stateless like every designer: all it knows comes from its arguments and
``update``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hpo_service.domain import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    OrdinalParameter,
    Params,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialSource,
    TrialState,
    objective_value,
)
from hpo_service.domain.designer import Designer, DesignerFactory, Suggestion
from hpo_service.domain.region import Box, Ellipsoid
from hpo_service.errors import InvalidInputError
from hpo_service.transfer.coords import (
    CubeEncoder,
    EncoderFactory,
    FloatArray,
    fill_inactive,
    region_coords,
    unconditional,
    with_coords,
)
from hpo_service.transfer.exploit import TrustOptions, replay, trust_box

__all__ = [
    "DEFAULT_TRUST",
    "SPACE_FILLING",
    "GuardOptions",
    "RegionDesigner",
    "narrowed_space",
]

REGION_SOURCE = "transfer_region"
# Designers without a model: their proposals do not improve with data, so seeds (where
# earlier tasks did well) stay better than their points for as long as seeds remain.
SPACE_FILLING = frozenset({"random", "sobol"})
_MAX_REJECTION_ROUNDS = 4
# Chosen on Hartmann-3, outlier and large-shift with BO sources (8 seeds each, see
# benchmarks/results/transfer_trust_ablation/): a quarter-side trust region, every other
# proposal on the whole region. Applied in every region (10 seeds), it cost evaluations
# where the region is large (random-search sources, 30-65% of the space: median
# evaluations to 1% regret on Hartmann-3 10 -> 11.5, large shift 10.5 -> 12,
# HPOBench-MLP 18.5 -> 22), hence only regions of at most a tenth of the space.
DEFAULT_TRUST = TrustOptions(start=0.25, global_every=2, max_volume=0.1)
# Grid values a trust region keeps at least on an int or ordinal coordinate.
_TRUST_GRID_VALUES = 4


@dataclass(frozen=True)
class GuardOptions:
    """When the negative-transfer guard grows the region.

    Attributes:
        min_trials: completed trials proposed from the region at the current level (seeds
            not counted: they sit near the edge by construction) before judging.
        edge: a float counts as on the edge within this share of its narrowed width.
        radius: an ellipsoid point counts as on the edge beyond this Mahalanobis radius.
        worse_by: the inside best is "clearly worse" when an outside point beats it by
            this share of the observed value range.
        factor: growth per level (half-widths and semi-axes).
        max_level: the most expansions.
    """

    min_trials: int = 6
    edge: float = 0.05
    radius: float = 0.95
    worse_by: float = 0.05
    factor: float = 2.0
    max_level: int = 3


def narrowed_space(
    space: SearchSpace, region: Box | Ellipsoid, make_encoder: EncoderFactory
) -> SearchSpace:
    """``space`` cut to the region's bounding box, in natural units.

    Float bounds are the decoded box corners; int ranges the integers whose cells meet
    the box (at least two); ordinal grids the values inside (at least the nearest one);
    categorical choices the kept subset. A conditional parameter whose parent values are
    all cut away is dropped, since it can never be active.
    """
    flat = unconditional(space)
    encoder = make_encoder(flat)
    column = {c.name: c.start for c in encoder.columns}
    lo = dict(zip(region.names, region.lower, strict=True))
    hi = dict(zip(region.names, region.upper, strict=True))
    params: list[Any] = []
    kept_values: dict[str, list[Any]] = {}
    for p in space.parameters:
        if isinstance(p, CategoricalParameter):
            choices = region.categorical_subsets.get(p.name, p.choices)
            new: Any = p.model_copy(update={"choices": list(choices)})
        elif p.name not in lo:
            new = p
        else:
            new = _narrow_numeric(p, lo[p.name], hi[p.name], encoder, column[p.name])
        if p.conditions is not None:
            allowed = kept_values.get(p.conditions.parent)
            values = [v for v in p.conditions.values if allowed is None or v in allowed]
            if not values:
                continue
            new = new.model_copy(
                update={"conditions": p.conditions.model_copy(update={"values": values})}
            )
        values_of_new = _values_of(new)
        if values_of_new is not None:
            kept_values[p.name] = values_of_new
        params.append(new)
    return SearchSpace(parameters=params)


def _values_of(p: Any) -> list[Any] | None:
    if isinstance(p, CategoricalParameter):
        return list(p.choices)
    if isinstance(p, OrdinalParameter):
        return list(p.values)
    return None


def _decode_at(encoder: CubeEncoder, name: str, col: int, u: float) -> Any:
    x = np.full(encoder.dim, 0.5)
    x[col] = u
    return encoder.decode(x)[name]


def _narrow_numeric(
    p: FloatParameter | IntParameter | OrdinalParameter,
    lo: float,
    hi: float,
    encoder: CubeEncoder,
    col: int,
) -> FloatParameter | IntParameter | OrdinalParameter:
    if isinstance(p, FloatParameter):
        low = max(p.low, float(_decode_at(encoder, p.name, col, lo)))
        high = min(p.high, float(_decode_at(encoder, p.name, col, hi)))
        return p.model_copy(update={"low": low, "high": high}) if low < high else p
    if isinstance(p, IntParameter):
        low = int(_decode_at(encoder, p.name, col, lo))
        high = int(_decode_at(encoder, p.name, col, hi))
        if low == high:
            if high < p.high:
                high += 1
            else:
                low -= 1
        return p.model_copy(update={"low": low, "high": high})
    pos = [float(encoder.encode({p.name: v})[col]) for v in p.values]
    cells = _cells(np.asarray(pos))
    values = [v for v, (a, b) in zip(p.values, cells, strict=True) if a < hi and b > lo]
    if not values:
        mid = (lo + hi) / 2
        values = [p.values[int(np.argmin([abs(u - mid) for u in pos]))]]
    return p.model_copy(update={"values": values})


def _cells(grid: FloatArray) -> list[tuple[float, float]]:
    """Encoded interval that decodes to each grid position (midpoints between them)."""
    mids = (grid[1:] + grid[:-1]) / 2
    lows = np.concatenate([[0.0], mids])
    highs = np.concatenate([mids, [1.0]])
    return [(float(a), float(b)) for a, b in zip(lows, highs, strict=True)]


def _key(params: Params) -> str:
    return json.dumps(params, sort_keys=True)


class RegionDesigner:
    """Seeds, then an inner designer confined to a region (see the module docstring).

    A ``Designer`` itself (``domain.designer``), wrapping the one ``make_inner`` builds.

    Args:
        config: the study's configuration (full space).
        seed: the request seed.
        region: the fitted region; None searches the full space after the seeds
            (warm start only).
        seeds: assignments valid in the full space, proposed first in this order.
        make_inner: builds the inner designer for a configuration and seed.
        make_encoder: the engine's encoder class (the one exact unit-cube map).
        version: the region's stored version (expansions count on from it).
        guard: when to grow the region; None disables the guard.
        seed_phase: stop proposing seeds once this many trials (seeds or not, finished
            or pending) lie inside the current region; None proposes every seed.
        trust: confine the inner designer to a trust region around the incumbent
            (``exploit.py``): True gives model-based designers ``DEFAULT_TRUST`` (random
            and Sobol never exploit, so they keep the whole region), False searches the
            whole region, options apply as given.
    """

    def __init__(
        self,
        config: StudyConfig,
        seed: int | None,
        *,
        region: Box | Ellipsoid | None,
        seeds: Sequence[Params],
        make_inner: DesignerFactory,
        make_encoder: EncoderFactory,
        version: int = 1,
        guard: GuardOptions | None = None,
        seed_phase: int | None = None,
        trust: TrustOptions | bool = True,
    ) -> None:
        self.config = config
        self.seed = seed
        self.base = region
        self.seeds = list(seeds)
        self.make_inner = make_inner
        self.make_encoder = make_encoder
        self.version = version
        self.guard = guard if guard is not None else GuardOptions()
        self.seed_phase = seed_phase
        self.trust = _trust_options(trust, config.algorithm not in SPACE_FILLING)
        self.encoder = make_encoder(config.space)
        self._cells: dict[str, tuple[FloatArray, list[tuple[float, float]]]] = {}
        for name in config.space.names:
            grid = _grid(config.space, self.encoder, name)
            if grid is not None:
                self._cells[name] = (grid, _cells(grid))
        self._completed: list[Trial] = []
        self._pending: list[Trial] = []
        self.level = 0
        self.expanded_because: str | None = None

    # -- Designer protocol -------------------------------------------------------------

    def update(self, completed: Sequence[Trial], pending: Sequence[Trial]) -> None:
        """Remember the history and decide the region's level for this request."""
        self._completed = list(completed)
        self._pending = list(pending)
        self.level = max([_level(t) for t in (*self._completed, *self._pending)] + [0])
        self.expanded_because = None
        if self.base is not None and self.level < self.guard.max_level:
            reason = self._guard_reason(self.region)
            if reason is not None:
                self.level += 1
                self.expanded_because = reason

    def suggest(self, count: int) -> list[Suggestion]:
        """Untried seeds first (while the seed phase lasts), then the region's proposals."""
        if count <= 0:
            return []
        known = {_key(t.params) for t in (*self._completed, *self._pending)}
        out: list[Suggestion] = []
        room = self._seed_room()
        for params in self.seeds:
            if len(out) >= min(count, room):
                break
            if _key(params) in known:
                continue
            known.add(_key(params))
            out.append(self._tag(params, TrialSource.TRANSFER_SEED, "seed", {}))
        if len(out) < count:
            out += self._from_region(count - len(out), out, known)
        return out

    def _seed_room(self) -> int:
        """How many more seeds the seed phase allows (see ``seed_phase``)."""
        if self.seed_phase is None:
            return len(self.seeds)
        inside = sum(self.inside(t.params) for t in (*self._completed, *self._pending))
        return max(0, self.seed_phase - inside)

    # -- the region --------------------------------------------------------------------

    @property
    def region(self) -> Box | Ellipsoid | None:
        """The region at the current level (the base grown ``factor ** level``)."""
        if self.base is None or self.level == 0:
            return self.base
        return self.base.expanded(self.guard.factor**self.level)

    def _coords(self, params: Params, region: Box | Ellipsoid) -> FloatArray:
        """``1 x dim`` coordinates of ``params``; inactive ones at the region's middle."""
        z = region_coords(self.encoder, self.config.space, params, region.names)
        return fill_inactive(z, region)

    def _test_coords(self, params: Params, region: Box | Ellipsoid) -> FloatArray:
        """Coordinates for membership: a grid value counts when its cell meets the region.

        An int or ordinal value stands for the interval of the cube that decodes to it;
        moving its coordinate within that interval towards the region's centre makes a
        box test exact and an ellipsoid test slightly generous, so grid points next to a
        thin region are not all rejected.
        """
        z = self._coords(params, region)
        centre = (np.asarray(region.lower) + np.asarray(region.upper)) / 2
        if isinstance(region, Ellipsoid):
            for a, c in zip(region.axes, region.center, strict=True):
                centre[region.names.index(a)] = c
        for j, name in enumerate(region.names):
            cells = self._cells.get(name)
            if cells is None or name not in params:
                continue
            grid, bounds = cells
            i = int(np.argmin(np.abs(grid - z[0, j])))
            z[0, j] = min(bounds[i][1], max(bounds[i][0], float(centre[j])))
        return z

    def inside(self, params: Params) -> bool:
        """Whether an assignment lies in the current region (always, without one)."""
        region = self.region
        if region is None:
            return True
        for name, kept in region.categorical_subsets.items():
            if name in params and params[name] not in kept:
                return False
        return bool(region.contains(self._test_coords(params, region))[0])

    def _from_region(
        self, count: int, seeds: Sequence[Suggestion], known: set[str]
    ) -> list[Suggestion]:
        region = self.region
        config = self.config
        if region is not None:
            searched = self._trust_region(region)
            config = replace(
                self.config, space=narrowed_space(self.config.space, searched, self.make_encoder)
            )
        completed = [t for t in self._completed if _valid(config.space, t.params)]
        pending = [t for t in self._pending if _valid(config.space, t.params)]
        pending += [_pseudo_trial(s.params) for s in seeds]
        inner = self.make_inner(config, self.seed)
        inner.update(completed, pending)
        if region is None or isinstance(region, Box):
            proposals = list(inner.suggest(count))
            return [self._keep(s, "region") for s in proposals[:count]]
        return self._inside_ellipsoid(inner, region, count, known)

    def _trust_region(self, region: Box | Ellipsoid) -> Box | Ellipsoid:
        """The trust region around the incumbent, or ``region`` without one (exploit.py)."""
        if self.trust is None or len(self.config.all_objectives) > 1:
            return region
        if region.volume_fraction() > self.trust.max_volume:
            return region
        objective = self.config.objective
        points = [
            (
                objective.sign() * v,
                t.source == TrialSource.TRANSFER_SEED,
                self._coords(t.params, region)[0],
            )
            for t in sorted(self._completed, key=lambda t: t.number)
            if t.state is TrialState.COMPLETED
            and (v := objective_value(objective, t.result)) is not None
            and self.inside(t.params)
        ]
        state = replay(points, region.dim, self.trust)
        if state is None or state.side >= 1.0:
            return region
        return trust_box(region, state, self._grid_widths(region))

    def _grid_widths(self, region: Box | Ellipsoid) -> FloatArray:
        """Per region coordinate, the cube width of ``_TRUST_GRID_VALUES`` grid values."""
        widths = np.zeros(len(region.names))
        for j, name in enumerate(region.names):
            if name in self._cells:
                grid = self._cells[name][0]
                step = float(np.median(np.diff(grid))) if len(grid) > 1 else 1.0
                widths[j] = step * (_TRUST_GRID_VALUES - 1)
        return widths

    def _inside_ellipsoid(
        self, inner: Designer, region: Ellipsoid, count: int, known: set[str]
    ) -> list[Suggestion]:
        out: list[Suggestion] = []
        rng = np.random.default_rng(None if self.seed is None else [self.seed, len(known)])
        if self.config.algorithm in SPACE_FILLING:
            ask = count * max(2, math.ceil(1.5 / max(self._acceptance(region), 0.02)))
            for _ in range(_MAX_REJECTION_ROUNDS):
                for s in inner.suggest(ask):
                    key = _key(s.params)
                    if len(out) < count and key not in known and self.inside(s.params):
                        known.add(key)
                        out.append(self._keep(s, "region"))
                if len(out) >= count:
                    return out
                ask *= 2
        else:
            for s in inner.suggest(count):
                if self.inside(s.params) and _key(s.params) not in known:
                    known.add(_key(s.params))
                    out.append(self._keep(s, "region"))
                    continue
                pulled = self._pull(s.params, region)
                if pulled is not None and _key(pulled) not in known:
                    known.add(_key(pulled))
                    out.append(self._tag(pulled, _source(s), "projected", dict(s.metadata)))
        while len(out) < count:
            params = self._random_inside(region, rng, known)
            if params is None:
                break
            known.add(_key(params))
            out.append(self._tag(params, TrialSource.FALLBACK_RANDOM, "fallback", {}))
        return out

    def _acceptance(self, region: Ellipsoid) -> float:
        box_volume = float(np.prod(np.asarray(region.upper) - np.asarray(region.lower)))
        cats = 1.0
        for name, kept in region.categorical_subsets.items():
            cats *= len(kept) / len(region.categorical_choices[name])
        return region.volume_fraction() / max(box_volume * cats, 1e-12)

    def _with_coords(self, params: Params, region: Box | Ellipsoid, z: FloatArray) -> Params:
        return with_coords(self.encoder, params, region.names, z)

    def _pull(self, params: Params, region: Ellipsoid) -> Params | None:
        z = region.pull_inside(self._coords(params, region))[0]
        pulled = self._with_coords(params, region, z)
        return pulled if self.inside(pulled) else None

    def _random_inside(
        self, region: Ellipsoid, rng: np.random.Generator, known: set[str]
    ) -> Params | None:
        template = (
            self.seeds[0] if self.seeds else self.encoder.decode(np.full(self.encoder.dim, 0.5))
        )
        for z in region.sample(64, rng):
            params = self._with_coords(template, region, z)
            for name, kept in region.categorical_subsets.items():
                if name in params:
                    params[name] = kept[int(rng.integers(len(kept)))]
            params = self.encoder.decode(self.encoder.encode(params))
            if self.inside(params) and _key(params) not in known:
                return params
        return None

    # -- guard -------------------------------------------------------------------------

    def _guard_reason(self, region: Box | Ellipsoid | None) -> str | None:
        if region is None or len(self.config.all_objectives) > 1:
            return None
        objective = self.config.objective
        scored = [
            (objective.sign() * v, t)
            for t in self._completed
            if t.state is TrialState.COMPLETED
            and (v := objective_value(objective, t.result)) is not None
        ]
        current = [
            (y, t)
            for y, t in scored
            if _level(t) >= self.level
            and t.source != TrialSource.TRANSFER_SEED
            and self.inside(t.params)
        ]
        if len(current) < self.guard.min_trials:
            return None
        inside = [(y, t) for y, t in scored if self.inside(t.params)]
        outside = [(y, t) for y, t in scored if not self.inside(t.params)]
        best_y, best = min(inside, key=lambda p: p[0])
        if outside:
            ys = [y for y, _ in scored]
            out_y, out_t = min(outside, key=lambda p: p[0])
            if out_y < best_y - self.guard.worse_by * (max(ys) - min(ys)):
                return f"trial {out_t.number} outside the region beats the best inside"
        edge = self._on_edge(best.params, region)
        if edge is not None:
            return f"best trial {best.number} presses on the region's boundary ({edge})"
        return None

    def _on_edge(self, params: Params, region: Box | Ellipsoid) -> str | None:
        narrowed = narrowed_space(self.config.space, region, self.make_encoder)
        axes = set(region.axes) if isinstance(region, Ellipsoid) else set()
        n_encoder = self.make_encoder(unconditional(narrowed))
        column = {c.name: c.start for c in n_encoder.columns}
        x = n_encoder.encode({k: v for k, v in params.items() if k in narrowed.names})
        for p in narrowed.parameters:
            if p.name not in params or p.name in axes or p.name not in region.names:
                continue
            full = self.config.space.get(p.name)
            u = x[column[p.name]]
            low_edge, high_edge = self._ends(p, params[p.name], u)
            if low_edge and _bound(p, "low") > _bound(full, "low"):
                return f"{p.name} at its lower bound"
            if high_edge and _bound(p, "high") < _bound(full, "high"):
                return f"{p.name} at its upper bound"
        if isinstance(region, Ellipsoid):
            z = self._coords(params, region)
            r = float(region.radius(z)[0])
            if r >= self.guard.radius:
                idx = [region.names.index(a) for a in region.axes]
                c = np.asarray(region.center)
                further = np.clip(c + (z[0, idx] - c) * (1.25 / max(r, 1e-9)), 0.0, 1.0)
                if float(np.linalg.norm(further - z[0, idx])) > 0.01:
                    return f"Mahalanobis radius {r:.2f}"
        return None

    def _ends(self, p: Any, value: Any, u: float) -> tuple[bool, bool]:
        if isinstance(p, FloatParameter):
            return u <= self.guard.edge, u >= 1.0 - self.guard.edge
        if isinstance(p, IntParameter):
            return value == p.low, value == p.high
        if isinstance(p, OrdinalParameter):
            return value == p.values[0], value == p.values[-1]
        return False, False

    # -- tagging -----------------------------------------------------------------------

    def _info(self, origin: str) -> dict[str, Any]:
        info: dict[str, Any] = {"origin": origin, "level": self.level}
        info["version"] = self.version + self.level
        if self.expanded_because is not None:
            info["expanded"] = self.expanded_because
        return info

    def _tag(
        self, params: Params, source: str, origin: str, metadata: dict[str, Any]
    ) -> Suggestion:
        info = {**metadata, "transfer": self._info(origin)}
        return Suggestion(params, str(source), info)

    def _keep(self, s: Suggestion, origin: str) -> Suggestion:
        source = str(s.source) if self.base is None else _source(s)
        return self._tag(s.params, source, origin, dict(s.metadata))


def _trust_options(trust: TrustOptions | bool, model_based: bool) -> TrustOptions | None:
    """Options from ``trust`` (given options; True: the default for a model; False: off)."""
    if isinstance(trust, TrustOptions):
        return trust
    return DEFAULT_TRUST if trust and model_based else None


def _grid(space: SearchSpace, encoder: CubeEncoder, name: str) -> FloatArray | None:
    """Sorted encoded positions of an int (up to 4096 values) or ordinal parameter."""
    p = space.get(name)
    column = {c.name: c.start for c in encoder.columns}[name]
    if isinstance(p, OrdinalParameter):
        values: list[float | int] = list(p.values)
    elif isinstance(p, IntParameter) and p.high - p.low < 4096:
        values = list(range(p.low, p.high + 1))
    else:
        return None
    return np.asarray([encoder.encode({name: v})[column] for v in values], dtype=np.float64)


def _source(s: Suggestion) -> str:
    """Inner proposals are region proposals unless the inner designer said otherwise."""
    return REGION_SOURCE if str(s.source) == TrialSource.ENGINE else str(s.source)


def _bound(p: Any, which: str) -> float:
    if isinstance(p, OrdinalParameter):
        return float(p.values[0] if which == "low" else p.values[-1])
    return float(getattr(p, which))


def _level(t: Trial) -> int:
    info = t.metadata.get("transfer") if isinstance(t.metadata, dict) else None
    level = info.get("level") if isinstance(info, dict) else None
    return level if isinstance(level, int) and not isinstance(level, bool) else 0


def _valid(space: SearchSpace, params: Params) -> bool:
    try:
        space.validate_params(params)
    except InvalidInputError:
        return False
    return True


def _pseudo_trial(params: Params) -> Trial:
    """A seed proposed in this same request, shown to the inner designer as pending."""
    return Trial(id="", study_id="", number=-1, params=dict(params), state=TrialState.REQUESTED)
