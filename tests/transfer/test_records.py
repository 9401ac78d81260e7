"""A study's transfer through the service: the spec and the fitted record, typed and apart."""

from __future__ import annotations

import pytest

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.models import StudyRow
from hpo_service.domain import Objective, Principal, Role, SearchSpace
from hpo_service.errors import InvalidInputError
from hpo_service.services import studies
from hpo_service.services import trials as trial_service

PRINCIPAL = Principal(key_id="t", role=Role.ADMIN, tenant="t")
SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
            {"name": "n", "type": "int", "low": 1, "high": 8},
        ]
    }
)


def _create(db: Database, name: str, transfer: dict | None = None) -> str:
    new = studies.NewStudy(
        name=name,
        objective=Objective(metric="loss"),
        space=SPACE,
        family="fam",
        algorithm="random",
        seed=1,
        transfer=transfer,
    )
    return studies.create_study(db, PRINCIPAL, new, default_max_attempts=3).id


def _sources(db: Database, n: int = 3) -> None:
    for s in range(n):
        sid = _create(db, f"src{s}")
        new = [
            trial_service.NewTrial(
                params={"x": (i + 0.5 * s) / 10, "n": 1 + i % 8},
                metrics={"loss": abs((i + 0.5 * s) / 10 - 0.3)},
            )
            for i in range(8)
        ]
        trial_service.add_trials(db, PRINCIPAL, sid, new, now=utcnow())


def test_the_column_holds_the_spec_with_the_record_under_fitted(db: Database) -> None:
    _sources(db)
    sent = {"method": "box", "top_k": 3, "seed_phase": 2, "trust": False}
    study = studies.get_study(db, PRINCIPAL, _create(db, "target", sent))
    spec, fitted = study.config.transfer, study.config.fitted_transfer
    assert spec is not None
    assert fitted is not None
    assert spec.to_json() == sent
    assert fitted.region is not None
    assert len(fitted.sources) == 3
    with db.read() as session:
        row = session.get(StudyRow, study.id)
        assert row is not None
        assert row.transfer == {**sent, "fitted": fitted.to_json()}
        stored = dict(row.transfer["fitted"])
        stored.pop("prior", None)  # the prior stays out of the queryable column
        assert row.effective_space == stored


def test_method_none_stores_the_spec_alone(db: Database) -> None:
    study = studies.get_study(db, PRINCIPAL, _create(db, "t", {"method": "none"}))
    assert study.config.fitted_transfer is None
    with db.read() as session:
        row = session.get(StudyRow, study.id)
        assert row is not None
        assert row.transfer == {"method": "none"}
        assert row.effective_space is None


@pytest.mark.parametrize(
    ("transfer", "loc"),
    [
        ({"method": "box", "seed_phase": 0}, ("body", "transfer", "seed_phase")),
        ({"method": "cube"}, ("body", "transfer", "method")),
        ({"method": "box", "top_k": True}, ("body", "transfer", "top_k")),
        ({"method": "box", "bogus": 1}, ("body", "transfer", "bogus")),
    ],
)
def test_a_bad_spec_is_refused_where_it_is_wrong_and_nothing_is_stored(
    db: Database, transfer: dict, loc: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidInputError) as info:
        _create(db, "t", transfer)
    assert any(e.loc == loc for e in info.value.errors), info.value.errors
    assert studies.list_studies(db, PRINCIPAL).items == []
