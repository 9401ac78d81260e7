"""Transfer use cases: fit a study's region at creation, show it, preview it, use it.

The region is fitted once, when the study is created, from the winners of the family's
earlier studies, and stored with the study as its ``FittedTransfer`` (apart from the
user's ``TransferSpec``; a summary also in the ``effective_space`` column) with
``version: 1``. Nothing about it lives in process memory, so it survives restarts. When
the negative-transfer guard grows the region, the new level is written on the trials
proposed from it; the study's current region is the stored one grown to the highest
level found on its trials, and its version counts on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.domain import (
    CategoricalParameter,
    FittedTransfer,
    FloatParameter,
    IntParameter,
    Params,
    Principal,
    Role,
    SearchSpace,
    SourcePrior,
    StudyConfig,
    TransferSpec,
)
from hpo_service.domain.region import Box, Ellipsoid
from hpo_service.domain.transfer import RejectedSource
from hpo_service.engine.designer import Designer, DesignerFactory, DesignerPrior
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.registry import make_designer
from hpo_service.errors import FieldError, InvalidInputError, NotFoundError
from hpo_service.services.access import require_role, visible_study
from hpo_service.transfer.coords import FloatArray, with_coords
from hpo_service.transfer.designer import (
    SPACE_FILLING,
    GuardOptions,
    RegionDesigner,
    narrowed_space,
)
from hpo_service.transfer.exploit import TrustOptions
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
from hpo_service.transfer.source_mean import source_gps

__all__ = [
    "designer_for",
    "effective_space",
    "fit_in_session",
    "get_region",
    "parse_transfer",
    "preview_region",
]

_MAX_SOURCES = 200
_MAX_SEEDS = 20
_LOC = ("body", "transfer")


def parse_transfer(data: Mapping[str, Any] | None) -> TransferSpec | None:
    """Check a new study's ``transfer`` object once, at creation, and type it.

    The API's schema has already checked its own fields; this also covers the options
    benchmarks and tools pass when they create studies through the service.

    Raises:
        InvalidInputError: every offending field, located under ``("body", "transfer")``.
    """
    if data is None:
        return None
    try:
        return TransferSpec.model_validate(dict(data))
    except ValidationError as exc:
        errors = [FieldError((*_LOC, *e["loc"]), str(e["msg"])) for e in exc.errors()]
        raise InvalidInputError("invalid transfer specification", errors) from None


def _options(spec: TransferSpec) -> FitOptions:
    defaults = FitOptions()
    return FitOptions(
        margin=float(spec.margin) if spec.margin is not None else defaults.margin,
        quantile=float(spec.quantile) if spec.quantile is not None else defaults.quantile,
        slack=spec.slack if spec.slack is not None else defaults.slack,
    )


def _candidates(
    session: Session, tenant: str, family: str | None, spec: TransferSpec
) -> list[SourceStudy]:
    studies = StudyRepository(session)
    if spec.sources == "family":
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
    else:
        rows = []
        for i, study_id in enumerate(spec.sources):
            row = studies.get(study_id, tenant=tenant)
            if row is None:
                raise InvalidInputError.at(
                    (*_LOC, "sources", i), f"unknown source study {study_id!r}"
                )
            rows.append(row)
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
    spec: TransferSpec,
    now: datetime,
) -> FittedTransfer | None:
    """Fit the region a new study gets, inside the caller's transaction.

    Returns:
        what the service derives for the study (``region`` None, with a ``reason``,
        when no source is usable: the study then searches the full space), or None for
        ``method: none``.

    Raises:
        InvalidInputError: unknown source ids, or explicitly named sources that cannot
            be used.
    """
    if spec.method == "none":
        return None
    min_completed = spec.min_completed if spec.min_completed is not None else spec.top_k
    candidates = _candidates(session, tenant, family, spec)
    decisions = choose_sources(space, candidates, min_completed=min_completed)
    if spec.sources != "family":
        for i, d in enumerate(decisions):
            if not d.used:
                raise InvalidInputError.at((*_LOC, "sources", i), f"{d.study_id}: {d.reason}")
    used = [c for c, d in zip(candidates, decisions, strict=True) if d.used]
    record = FittedTransfer(
        version=1,
        method=spec.method,
        top_k=spec.top_k,
        fitted_at=now,
        sources=tuple(c.study_id for c in used),
        rejected_sources=tuple(
            RejectedSource(d.study_id, d.reason or "") for d in decisions if not d.used
        ),
    )
    if not used:
        reason = (
            "no earlier study of the family is compatible and has enough completed trials"
            if candidates
            else "no earlier study to learn from"
        )
        return replace(record, reason=reason)
    region: Box | Ellipsoid | None = None
    fit: dict[str, Any] | None = None
    prior: SourcePrior | None = None
    winners = collect_winners(space, used, top_k=spec.top_k, make_encoder=SpaceEncoder)
    if spec.method != "warm_start":
        result = fit_region(winners, spec.method, _options(spec))
        region, fit = result.region, result.notes
        if spec.prior:
            prior = source_prior(space, used, region, SpaceEncoder, _fit_hypers)
    return replace(
        record,
        region=region,
        fit=fit,
        seeds=tuple(_seeds(space, used, region, winners)),
        prior=prior,
        effective_space=_summary(space, region, record),
    )


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


def effective_space(config: StudyConfig) -> dict[str, Any] | None:
    """What the API shows as ``effective_space``: the stored region's summary, or None."""
    fitted = config.fitted_transfer
    return fitted.effective_space if fitted is not None else None


def _summary(
    space: SearchSpace, region: Box | Ellipsoid | None, record: FittedTransfer
) -> dict[str, Any] | None:
    if region is None:
        return None
    return {
        "version": record.version,
        "method": record.method,
        "kind": region.kind,
        "sources": list(record.sources),
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
    fitted, spec = config.fitted_transfer, config.transfer
    if fitted is None or spec is None or (fitted.region is None and not fitted.seeds):
        return make_designer(config, seed)
    region = fitted.region
    model_based = config.algorithm not in SPACE_FILLING
    phase = _seed_phase(config.space, spec) if region and model_based else None
    return RegionDesigner(
        config,
        seed,
        region=region,
        seeds=fitted.seeds,
        make_inner=(
            make_designer
            if phase is None
            else _informed(phase, config.space, fitted.prior, use_mean=spec.prior_mean)
        ),
        make_encoder=SpaceEncoder,
        version=fitted.version,
        guard=GuardOptions() if region is not None else None,
        seed_phase=phase,
        trust=_trust(spec),
    )


def _seed_phase(space: SearchSpace, spec: TransferSpec) -> int:
    """Points inside the region before the model takes over.

    ``seeds.seed_phase_length`` unless the spec names ``seed_phase`` (a benchmark and
    tool option, like ``margin``; the API does not expose it).
    """
    return spec.seed_phase or seed_phase_length(len(space.names))


def _trust(spec: TransferSpec) -> TrustOptions | bool:
    """The spec's trust region: on or off, or ``TrustOptions`` with the fields it names."""
    if isinstance(spec.trust, bool):
        return spec.trust
    return replace(TrustOptions(), **spec.trust.model_dump(exclude_none=True))


def _informed(
    initial: int, space: SearchSpace, prior: SourcePrior | None, *, use_mean: bool
) -> DesignerFactory:
    """``make_designer`` given what the sources show, for each inner space it is asked for.

    The inner designer's initial design is cut to ``initial`` points (the seeds are the
    rest of it). With a stored source prior (``transfer/prior.py``) the model also gets
    the sources' lengthscales and, unless the spec's ``prior_mean`` is false (for
    ablations), their mean (``transfer/source_mean.py``), both mapped onto the narrowed
    space the wrapper builds it for, which changes with the guard and the trust region.
    """

    def make(config: StudyConfig, seed: int | None) -> Designer:
        if prior is None:
            return make_designer(config, seed, DesignerPrior(initial_design=initial))
        frame = inner_frame(prior.names, space, config.space, SpaceEncoder)
        learned = inner_prior(prior, frame)
        mean = source_gps(prior, frame) if use_mean else None
        return make_designer(
            config,
            seed,
            DesignerPrior(initial_design=initial, lengthscale=learned, mean=mean),
        )

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
    record: FittedTransfer,
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
        "method": record.method,
        "kind": region.kind,
        "version": record.version + level,
        "level": level,
        "sources": list(record.sources),
        "rejected_sources": [
            {"study_id": r.study_id, "reason": r.reason} for r in record.rejected_sources
        ],
        "bounds": bounds,
        "volume_fraction": region.volume_fraction(),
        "categorical_subsets": region.categorical_subsets,
        "space": narrowed.model_dump(mode="json", exclude_none=True),
        "seeds": [dict(p) for p in record.seeds],
        "fit": record.fit,
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
        fitted = config.fitted_transfer
        if fitted is None or fitted.region is None:
            why = fitted.reason if fitted is not None else None
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
    region = fitted.region
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
    spec: TransferSpec,
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
    if record is None or record.region is None:
        why = "method 'none' learns no region" if record is None else record.reason
        raise InvalidInputError.at(("body", "method"), f"no region to preview: {why}")
    view = region_view(space, record.region, record)
    view["family"] = family
    return view
