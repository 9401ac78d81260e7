"""The typed study specs and the transfer record: shown and stored exactly as before."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from hpo_service.domain import FittedTransfer, SourcePrior, StoppingSpec, TransferSpec
from hpo_service.domain.region import Box, ellipsoid_from
from hpo_service.domain.transfer import RejectedSource, SourceFit

BOX = Box(names=["a", "b"], lower=[0.1, 0.2], upper=[0.6, 0.9])
ELLIPSOID = ellipsoid_from(
    names=["a", "b"],
    axes=["a", "b"],
    center=np.array([0.4, 0.5]),
    matrix=np.diag([1 / 0.2**2, 1 / 0.3**2]),
    lower=np.array([0.2, 0.2]),
    upper=np.array([0.6, 0.8]),
    categorical_subsets={},
    categorical_choices={},
)
PRIOR = SourcePrior(
    names=["a", "b"],
    log_rho=[1.5, math.nan],
    sigma=[0.8, math.nan],
    per_source=[[1.4, -2.0], [1.6, -1.0]],
    rows=[3, 3],
    lower=[0.1, 0.2],
    width=[0.5, 0.7],
    sources=tuple(
        SourceFit(
            u=[[0.1, 0.2], [0.5, 0.5], [0.9, 0.3]],
            y=[1.0, 0.0, -1.0],
            log_rho=[1.0, -9.2],
            log_scale=0.1,
            log_noise=-6.0,
        )
        for _ in range(2)
    ),
)
WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _record(**overrides: object) -> FittedTransfer:
    fields: dict[str, object] = {
        "version": 1,
        "method": "box",
        "top_k": 5,
        "fitted_at": WHEN,
        "sources": ("st_a", "st_b"),
        "rejected_sources": (RejectedSource("st_c", "only 2 completed trials"),),
        "region": BOX,
        "fit": {"fallback": None, "dropped": 0, "n_points": 10, "n_tasks": 2},
        "seeds": ({"a": 0.3, "b": 1},),
        "prior": PRIOR,
        "effective_space": {"version": 1, "kind": "box"},
    }
    fields.update(overrides)
    return FittedTransfer(**fields)  # type: ignore[arg-type]


def test_a_record_is_stored_key_for_key_as_the_service_always_wrote_it() -> None:
    stored = _record().to_json()
    assert list(stored) == [
        "version",
        "method",
        "top_k",
        "fitted_at",
        "sources",
        "rejected_sources",
        "region",
        "fit",
        "seeds",
        "reason",
        "prior",
        "effective_space",
    ]
    assert stored["fitted_at"] == "2026-03-04T05:06:07.890123+00:00"
    assert stored["rejected_sources"] == [{"study_id": "st_c", "reason": "only 2 completed trials"}]
    assert stored["region"] == BOX.to_json()
    assert list(stored["prior"]) == [
        "names",
        "log_rho",
        "sigma",
        "per_source",
        "rows",
        "lower",
        "width",
        "sources",
    ]
    assert list(stored["prior"]["sources"][0]) == ["u", "y", "log_rho", "log_scale", "log_noise"]


@pytest.mark.parametrize(
    "record",
    [
        _record(),
        _record(region=ELLIPSOID, method="ellipsoid"),
        _record(method="warm_start", region=None, fit=None, prior=None, effective_space=None),
        _record(
            sources=(),
            region=None,
            fit=None,
            seeds=(),
            prior=None,
            effective_space=None,
            reason="no earlier study to learn from",
        ),
    ],
)
def test_a_stored_record_reads_back_to_the_same_json(record: FittedTransfer) -> None:
    # through JSON text, as the database column holds it (NaN included)
    stored = json.loads(json.dumps(record.to_json()))
    again = FittedTransfer.from_json(stored)
    assert json.dumps(again.to_json()) == json.dumps(record.to_json())
    assert again.region == record.region
    assert again.fitted_at == record.fitted_at


def test_the_summary_key_is_absent_without_a_usable_source_and_null_without_a_region() -> None:
    nothing = _record(sources=(), region=None, prior=None, effective_space=None, reason="x")
    assert "effective_space" not in nothing.to_json()
    assert "prior" not in nothing.to_json()
    warm = _record(method="warm_start", region=None, prior=None, effective_space=None)
    assert warm.to_json()["effective_space"] is None


def test_an_older_record_with_a_null_prior_reads_as_no_prior() -> None:
    stored = {**_record(prior=None).to_json(), "prior": None}
    assert FittedTransfer.from_json(stored).prior is None


def test_a_spec_shows_only_what_was_sent() -> None:
    api = {"method": "ellipsoid", "top_k": 4, "sources": "family"}
    assert TransferSpec.model_validate(api).to_json() == api
    tool = {"method": "box", "margin": 0, "trust": {"start": 0.5}, "prior": False}
    spec = TransferSpec.model_validate(tool)
    assert spec.to_json() == tool
    assert json.dumps(spec.to_json()["margin"]) == "0"  # not 0.0
    assert spec.top_k == 5
    assert spec.prior_mean is True


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "cube"},
        {"top_k": 0},
        {"top_k": True},
        {"seed_phase": 0},
        {"sources": "everything"},
        {"trust": {"radius": 0.3}},
        {"fitted": {}},
    ],
)
def test_a_spec_refuses_what_no_study_could_use(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TransferSpec.model_validate(bad)


def test_a_stopping_spec_shows_the_numbers_as_sent() -> None:
    sent = {"rule": "percentile", "percentile": 25, "min_steps": 2, "metric": None}
    spec = StoppingSpec.model_validate(sent)
    assert spec.to_json() == sent
    assert json.dumps(spec.to_json()["percentile"]) == "25"
    assert StoppingSpec.model_validate({"rule": "none"}).to_json() == {"rule": "none"}
