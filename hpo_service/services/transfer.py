"""Transfer use cases: fit a study's region at creation, show it, preview it, use it.

The region is fitted once, when the study is created, from the winners of the family's
earlier studies, and stored with the study (in its ``transfer`` document, which designers
see, and in ``effective_space``) with ``version: 1``. Nothing about it lives in process
memory, so it survives restarts. When the negative-transfer guard grows the region, the
new level is written on the trials proposed from it; the study's current region is the
stored one grown to the highest level found on its trials, and its version counts on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.domain import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Params,
    Principal,
    Role,
    SearchSpace,
    StudyConfig,
)
from hpo_service.domain.region import Box, Ellipsoid, region_from_json
from hpo_service.engine.designer import Designer, Suggestion
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.registry import make_designer
from hpo_service.errors import InvalidInputError, NotFoundError
from hpo_service.services.access import require_role, visible_study
from hpo_service.transfer.coords import FloatArray, with_coords
from hpo_service.transfer.designer import (
    SPACE_FILLING,
    GuardOptions,
    RegionDesigner,
    narrowed_space,
)
from hpo_service.transfer.fit import FitOptions, Winners, fit_region
from hpo_service.transfer.prior import inner_frame, inner_prior, source_prior
from hpo_service.transfer.seeds import consensus_point, seed_phase_length, support_order
from hpo_service.transfer.select import (
    SourceStudy,
    center_params,
    choose_sources,
    collect_winners,
    map_params,
    ranked,
)

__all__ = [
    "METHODS",
    "designer_for",
    "effective_space",
    "fit_in_session",
    "get_region",
    "preview_region",
    "public_transfer",
]

# "none", "box" and "ellipsoid" are the API's; the others serve benchmarks and tools.
METHODS = ("none", "box", "ellipsoid", "quantile_box", "warm_start")
_MAX_SOURCES = 200
_MAX_SEEDS = 20


def _spec_error(field: str, msg: str) -> InvalidInputError:
    return InvalidInputError.at(("body", "transfer", field), msg)


def _options(spec: dict[str, Any]) -> FitOptions:
    defaults = FitOptions()
    return FitOptions(
        margin=float(spec.get("margin", defaults.margin)),
        quantile=float(spec.get("quantile", defaults.quantile)),
        slack=bool(spec.get("slack", defaults.slack)),
    )


def _candidates(
    session: Session, tenant: str, family: str | None, spec: dict[str, Any]
) -> list[SourceStudy]:
    studies = StudyRepository(session)
    sources = spec.get("sources", "family")
    if sources == "family":
        if family is None:
            return []
        rows = studies.page(
            tenant=tenant,
            family=family,
            state=None,
            name=None,
            after=None,
            limit=_MAX_SOURCES,
        ).rows
    elif isinstance(sources, list):
        rows = []
        for i, study_id in enumerate(sources):
            row = studies.get(str(study_id), tenant=tenant)
            if row is None:
                raise InvalidInputError.at(
                    ("body", "transfer", "sources", i), f"unknown source study {study_id!r}"
                )
            rows.append(row)
    else:
        raise _spec_error("sources", "sources must be 'family' or a list of study ids")
    trials = TrialRepository(session)
    out: list[SourceStudy] = []
    for row in rows:
        config = study_config(row)
        done = trials.completed_by_value(row.id, config.objective.goal)
        out.append(SourceStudy(row.id, config.space, config.objective, [to_trial(t) for t in done]))
    return out


def fit_in_session(
    session: Session,
    *,
    tenant: str,
    family: str | None,
    space: SearchSpace,
    spec: dict[str, Any],
    now: datetime,
) -> dict[str, Any] | None:
    """Fit the region a new study gets, inside the caller's transaction.

    Returns:
        the record to store under ``transfer["fitted"]`` (``region`` None, with a
        ``reason``, when no source is usable: the study then searches the full space),
        or None for ``method: none``.

    Raises:
        InvalidInputError: an unknown method, a bad ``top_k``, unknown source ids, or
            explicitly named sources that cannot be used.
    """
    method = spec.get("method", "box")
    if method not in METHODS:
        raise _spec_error("method", f"unknown transfer method {method!r}")
    if method == "none":
        return None
    top_k = spec.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise _spec_error("top_k", "top_k must be a positive integer")
    seed_phase = spec.get("seed_phase")
    if seed_phase is not None and (
        not isinstance(seed_phase, int) or isinstance(seed_phase, bool) or seed_phase < 1
    ):
        raise _spec_error("seed_phase", "seed_phase must be a positive integer")
    min_completed = int(spec.get("min_completed", top_k))
    candidates = _candidates(session, tenant, family, spec)
    decisions = choose_sources(space, candidates, min_completed=min_completed)
    if isinstance(spec.get("sources"), list):
        for i, d in enumerate(decisions):
            if not d.used:
                raise InvalidInputError.at(
                    ("body", "transfer", "sources", i), f"{d.study_id}: {d.reason}"
                )
    used = [c for c, d in zip(candidates, decisions, strict=True) if d.used]
    record: dict[str, Any] = {
        "version": 1,
        "method": method,
        "top_k": top_k,
        "fitted_at": now.isoformat(),
        "sources": [c.study_id for c in used],
        "rejected_sources": [
            {"study_id": d.study_id, "reason": d.reason} for d in decisions if not d.used
        ],
        "region": None,
        "fit": None,
        "seeds": [],
        "reason": None,
    }
    if not used:
        record["reason"] = (
            "no earlier study of the family is compatible and has enough completed trials"
            if candidates
            else "no earlier study to learn from"
        )
        return record
    region: Box | Ellipsoid | None = None
    winners = collect_winners(space, used, top_k=top_k, make_encoder=SpaceEncoder)
    if method != "warm_start":
        result = fit_region(winners, method, _options(spec))
        region = result.region
        record["region"] = region.to_json()
        record["fit"] = result.notes
        if spec.get("prior", True) is not False:
            record["prior"] = source_prior(space, used, region, SpaceEncoder, _fit_hypers)
    record["seeds"] = _seeds(space, used, region, winners)
    record["effective_space"] = _summary(space, region, record)
    return record


def _seeds(
    space: SearchSpace,
    used: Sequence[SourceStudy],
    region: Box | Ellipsoid | None,
    winners: Winners,
) -> list[Params]:
    """The consensus point, then the sources' best trials, supported and spread out.

    When at least three sources agree, the local average of their winners around the
    best-supported seed (``seeds.consensus_point``) goes first, keeping that seed's
    categorical choices: it is the single best guess. The sources' bests follow in
    ``seeds.support_order(spread=True)``: each next one is well supported by the other
    sources and far from what is already proposed, so the first few points both probe
    the likeliest places and cover the region for the model that takes over. Parameters
    a source lacks take the region's centre (the cube's without a region).
    """
    encoder = SpaceEncoder(space)
    if region is not None:
        fill = center_params(space, region, SpaceEncoder)
    else:
        fill = encoder.decode(np.full(encoder.dim, 0.5))
    ranking = support_order(winners)
    if not ranking:
        return []
    z = consensus_point(winners, ranking[0])
    seeds: list[Params] = []
    for index in support_order(winners, spread=True, anchor=z):
        best = ranked(used[index])[:1]
        if best:
            mapped = map_params(space, best[0].params, fill)
            if mapped not in seeds:
                seeds.append(mapped)
    if z is not None:
        top = map_params(space, ranked(used[ranking[0]])[0].params, fill)
        consensus = space.validate_params(with_coords(encoder, top, winners.names, z))
        x = encoder.encode(consensus)
        if not any(np.allclose(x, encoder.encode(s), rtol=0, atol=1e-9) for s in seeds):
            seeds.insert(0, consensus)
    return seeds[:_MAX_SEEDS]


def public_transfer(transfer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The study's ``transfer`` as the client sent it (the fitted record lives apart)."""
    if transfer is None:
        return None
    return {k: v for k, v in transfer.items() if k != "fitted"}


def effective_space(config: StudyConfig) -> dict[str, Any] | None:
    """What the API shows as ``effective_space``: the stored region's summary, or None."""
    fitted = (config.transfer or {}).get("fitted")
    if not isinstance(fitted, dict):
        return None
    summary = fitted.get("effective_space")
    return summary if isinstance(summary, dict) else None


def _summary(
    space: SearchSpace, region: Box | Ellipsoid | None, record: dict[str, Any]
) -> dict[str, Any] | None:
    if region is None:
        return None
    return {
        "version": record["version"],
        "method": record["method"],
        "kind": region.kind,
        "sources": record["sources"],
        "volume_fraction": region.volume_fraction(),
        "space": narrowed_space(space, region, SpaceEncoder).model_dump(
            mode="json", exclude_none=True
        ),
    }


def designer_for(config: StudyConfig, seed: int | None) -> Designer:
    """The study's designer: its algorithm, confined to its region when it has one.

    With a region and a model-based designer, the seeds are the model's initial design
    (``seeds.seed_phase_length`` points inside the region), and a GP starts modelling
    right after it instead of running its own, longer, space-filling design. Random and
    Sobol never learn, so they get every seed first. Without a region (warm start only)
    every seed is proposed and the designer keeps its defaults.
    """
    fitted = (config.transfer or {}).get("fitted")
    if not isinstance(fitted, dict) or (not fitted.get("region") and not fitted.get("seeds")):
        return make_designer(config, seed)
    region = region_from_json(fitted["region"]) if fitted.get("region") else None
    model_based = config.algorithm not in SPACE_FILLING
    phase = _seed_phase(config) if region and model_based else None
    return RegionDesigner[Suggestion](
        config,
        seed,
        region=region,
        seeds=list(fitted.get("seeds") or []),
        make_inner=(
            make_designer
            if phase is None
            else _inner_factory(phase, config.space, config.transfer or {})
        ),
        make_encoder=SpaceEncoder,
        make_suggestion=Suggestion,
        version=int(fitted.get("version", 1)),
        guard=GuardOptions() if region is not None else None,
        seed_phase=phase,
    )


def _seed_phase(config: StudyConfig) -> int:
    """Points inside the region before the model takes over.

    ``seeds.seed_phase_length`` unless the spec names ``seed_phase`` (a benchmark and
    tool option, validated at creation, like ``margin``; the API does not expose it).
    """
    value = (config.transfer or {}).get("seed_phase")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return seed_phase_length(len(config.space.names))


def _inner_factory(
    initial: int, space: SearchSpace | None = None, spec: dict[str, Any] | None = None
) -> Callable[[StudyConfig, int | None], Designer]:
    """``make_designer``, with a GP's initial design shortened to ``initial`` points.

    With a stored source prior (``transfer/prior.py``), the GP also gets the sources'
    lengthscale prior and mean (``transfer/source_mean.py``; the spec's ``prior_mean:
    false`` leaves the mean out, for ablations), in the narrowed space it is built for.
    """
    spec = spec or {}
    prior = (spec.get("fitted") or {}).get("prior") if space is not None else None

    def make(config: StudyConfig, seed: int | None) -> Designer:
        inner = make_designer(config, seed)
        if config.algorithm == "gp":
            from hpo_service.engine.gp import GPDesigner
            from hpo_service.engine.gp_model import AveragedPosteriorMean, LengthscalePrior
            from hpo_service.transfer.source_mean import source_gps

            if isinstance(inner, GPDesigner) and inner.options.n_initial is None:
                inner.options = replace(inner.options, n_initial=initial)
            if isinstance(inner, GPDesigner) and prior and space is not None:
                frame = inner_frame(prior["names"], space, config.space, SpaceEncoder)
                learned = inner_prior(prior, frame)
                if learned is not None:
                    centre, sigma = learned
                    inner.options = replace(
                        inner.options,
                        lengthscale_prior=LengthscalePrior(tuple(centre), tuple(sigma)),
                    )
                if spec.get("prior_mean", True) is not False:
                    gps = source_gps(prior, frame)
                    mean = AveragedPosteriorMean(*gps) if gps is not None else None
                    inner.options = replace(inner.options, prior_mean=mean)
        return inner

    return make


def _fit_hypers(x: FloatArray, y: FloatArray) -> FloatArray:
    """The engine's MAP fit of one source's rows (``transfer.prior.FitHypers``)."""
    from hpo_service.engine.device import to_tensor
    from hpo_service.engine.gp_model import Hyperparameters, fit_hyperparameters

    found, _ = fit_hyperparameters(to_tensor(x), to_tensor(y), Hyperparameters.default(x.shape[1]))
    return found.vector()


def region_view(
    space: SearchSpace,
    region: Box | Ellipsoid,
    record: dict[str, Any],
    *,
    level: int = 0,
    expansions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The region in the encoded cube and in natural units (API.md, Transfer)."""
    narrowed = narrowed_space(space, region, SpaceEncoder)
    bounds: dict[str, Any] = {}
    for name, lo, hi in zip(region.names, region.lower, region.upper, strict=True):
        p = narrowed.get(name) if name in narrowed.names else space.get(name)
        entry: dict[str, Any] = {"encoded": [lo, hi]}
        if isinstance(p, FloatParameter | IntParameter):
            entry.update(low=p.low, high=p.high)
        elif not isinstance(p, CategoricalParameter):
            entry.update(values=list(p.values))
        bounds[name] = entry
    view: dict[str, Any] = {
        "method": record["method"],
        "kind": region.kind,
        "version": int(record.get("version", 1)) + level,
        "level": level,
        "sources": record["sources"],
        "rejected_sources": record.get("rejected_sources", []),
        "bounds": bounds,
        "volume_fraction": region.volume_fraction(),
        "categorical_subsets": region.categorical_subsets,
        "space": narrowed.model_dump(mode="json", exclude_none=True),
        "seeds": record.get("seeds", []),
        "fit": record.get("fit"),
        "expansions": expansions or [],
        "region": region.to_json(),
    }
    if isinstance(region, Ellipsoid):
        center = center_params(space, region, SpaceEncoder)
        view.update(
            axes=region.axes,
            center={
                "encoded": region.center,
                "natural": {a: center[a] for a in region.axes if a in center},
            },
            matrix=region.matrix,
        )
    return view


def get_region(db: Database, principal: Principal, study_id: str) -> dict[str, Any]:
    """The study's current region (the stored one, grown by any recorded expansion).

    Raises:
        StudyNotFoundError: unknown id, or another tenant's study.
        NotFoundError: the study learned no region (no transfer, or no usable source).
    """
    with db.read() as session:
        row = visible_study(session, principal, study_id)
        config = study_config(row)
        fitted = (config.transfer or {}).get("fitted")
        if not isinstance(fitted, dict) or not fitted.get("region"):
            why = fitted.get("reason") if isinstance(fitted, dict) else None
            raise NotFoundError(
                f"study {study_id!r} has no learned region" + (f": {why}" if why else "")
            )
        trials = [to_trial(t) for t in TrialRepository(session).all_for_study(row.id)]
    level, expansions = 0, []
    for t in trials:
        info = t.metadata.get("transfer")
        if not isinstance(info, dict):
            continue
        level = max(level, int(info.get("level", 0)))
        if "expanded" in info:
            expansions.append(
                {"trial_number": t.number, "level": info.get("level"), "reason": info["expanded"]}
            )
    region = region_from_json(fitted["region"])
    current = region.expanded(GuardOptions().factor ** level) if level else region
    view = region_view(config.space, current, fitted, level=level, expansions=expansions)
    view["study_id"] = row.id
    return view


def preview_region(
    db: Database,
    principal: Principal,
    family: str,
    *,
    space: SearchSpace,
    spec: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The region a new study of ``family`` would get now, without creating it.

    Raises:
        InvalidInputError: a bad spec, or no usable source (the detail says why).
    """
    require_role(principal, Role.CLIENT)
    with db.read() as session:
        record = fit_in_session(
            session, tenant=principal.tenant, family=family, space=space, spec=spec, now=now
        )
    if record is None or not record.get("region"):
        why = "method 'none' learns no region" if record is None else record.get("reason")
        raise InvalidInputError.at(("body", "method"), f"no region to preview: {why}")
    region = region_from_json(record["region"])
    view = region_view(space, region, record)
    view["family"] = family
    return view
