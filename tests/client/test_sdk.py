"""The SDK against a mock transport: the requests it sends and how it reads the answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pydantic
import pytest

from hpo_service.client import (
    ExtrapolationResult,
    HPOClient,
    ProblemError,
    Study,
    StudyPage,
    Trial,
)

BASE = "http://hpo.test"
KEY = "hpo_key_test"


def study_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "st_1",
        "tenant": "acme",
        "name": "proxy",
        "family": "gpt",
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "objectives": None,
        "constraints": None,
        "stopping": None,
        "space": {
            "parameters": [
                {"name": "lr", "type": "float", "low": 1e-5, "high": 0.1, "scale": "log"},
                {"name": "layers", "type": "int", "low": 1, "high": 8, "scale": "linear"},
                {"name": "opt", "type": "categorical", "choices": ["adamw", "muon"]},
            ]
        },
        "algorithm": "gp",
        "transfer": None,
        "scale": None,
        "effective_space": None,
        "max_trials": 20,
        "max_attempts": 3,
        "seed": 0,
        "metadata": {},
        "state": "active",
        "created_at": "2025-03-01T12:00:00Z",
        "updated_at": None,
        "trial_counts": {"completed": 2, "active": 1},
    }
    body.update(overrides)
    return body


def trial_json(number: int = 0, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"tr_{number}",
        "study_id": "st_1",
        "number": number,
        "params": {"lr": 0.001, "layers": 4, "opt": "muon"},
        "state": "completed",
        "worker_id": "w-1",
        "attempt": 1,
        "lease_expires_at": None,
        "measurements": [
            {"step": 10, "metrics": {"val_loss": 2.5}, "elapsed_s": 1.5, "at": None},
        ],
        "result": {"metrics": {"val_loss": 1.25}},
        "cost": {"gpu_seconds": 3.0},
        "source": "engine",
        "metadata": {},
        "created_at": "2025-03-01T12:00:01Z",
        "started_at": "2025-03-01T12:00:02Z",
        "finished_at": "2025-03-01T12:00:03Z",
        "error": None,
    }
    body.update(overrides)
    return body


@dataclass
class Service:
    """A fake service: answers requests in order and remembers what it was sent."""

    answers: list[httpx.Response] = field(default_factory=list)
    sent: list[httpx.Request] = field(default_factory=list)

    def answer(self, status: int = 200, body: Any = None, **kw: Any) -> None:
        if body is None:
            self.answers.append(httpx.Response(status, **kw))
        else:
            self.answers.append(httpx.Response(status, json=body, **kw))

    def problem(self, status: int, slug: str, title: str, detail: str, **extra: Any) -> None:
        body = {
            "type": f"https://hpo.example/problems/{slug}",
            "title": title,
            "status": status,
            "detail": detail,
            **extra,
        }
        headers = {"content-type": "application/problem+json"}
        self.answers.append(httpx.Response(status, content=json.dumps(body), headers=headers))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        assert self.answers, f"unexpected request {request.method} {request.url}"
        return self.answers.pop(0)

    @property
    def last(self) -> httpx.Request:
        return self.sent[-1]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode())


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def make_client(service: Service) -> Iterator[Callable[..., HPOClient]]:
    opened: list[httpx.Client] = []

    def make(api_key: str | None = KEY) -> HPOClient:
        http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(service.handle))
        opened.append(http)
        return HPOClient(api_key=api_key, http=http)

    yield make
    for http in opened:
        http.close()


@pytest.fixture
def hpo(make_client: Callable[..., HPOClient]) -> HPOClient:
    return make_client()


# Requests ---------------------------------------------------------------------------------
def test_create_sends_the_spec_with_the_key_and_the_idempotency_key(
    hpo: HPOClient, service: Service
) -> None:
    spec = {"name": "proxy", "objective": {"metric": "val_loss"}, "space": {"parameters": []}}
    service.answer(201, study_json())
    hpo.studies.create(spec, idempotency_key="create-1")
    sent = service.last
    assert (sent.method, sent.url.path) == ("POST", "/v1/studies")
    assert body(sent) == spec
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["idempotency-key"] == "create-1"


def test_no_key_sends_no_authorization_and_no_idempotency_key_by_default(
    make_client: Callable[..., HPOClient], service: Service
) -> None:
    service.answer(200, study_json())
    make_client(api_key=None).studies.get("st_1")
    assert "authorization" not in service.last.headers
    assert "idempotency-key" not in service.last.headers


def test_list_sends_only_the_filters_given(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"items": [], "next_page_token": None})
    hpo.studies.list(family="gpt", state="active", page_size=10)
    assert service.last.url.path == "/v1/studies"
    assert query(service.last) == {"family": ["gpt"], "state": ["active"], "page_size": ["10"]}


def test_worker_calls_send_the_bodies_of_api_md(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"trials": [trial_json(state="active")], "study_state": "active"})
    service.answer(200, {"lease_expires_at": "2025-03-01T12:05:00Z", "should_stop": False})
    service.answer(200, {"should_stop": True})
    service.answer(200, trial_json())
    service.answer(200, trial_json(state="requested", attempt=2))
    service.answer(200, trial_json(state="infeasible"))

    hpo.trials.suggest("st_1", "w-1", count=2)
    hpo.trials.heartbeat("tr_0", "w-1")
    hpo.trials.report("tr_0", "w-1", 10, {"val_loss": 2.5}, elapsed_s=1.5)
    hpo.trials.complete("tr_0", "w-1", {"val_loss": 1.25}, {"gpu_seconds": 3}, idempotency_key="k")
    hpo.trials.fail("tr_0", "w-1", "OOM", retry=True, idempotency_key="f")
    hpo.trials.infeasible("tr_0", "w-1", "diverged")

    sent = [(r.method, r.url.path, body(r)) for r in service.sent]
    assert sent == [
        ("POST", "/v1/studies/st_1/suggestions", {"worker_id": "w-1", "count": 2}),
        ("POST", "/v1/trials/tr_0/heartbeat", {"worker_id": "w-1"}),
        (
            "POST",
            "/v1/trials/tr_0/measurements",
            {"worker_id": "w-1", "step": 10, "metrics": {"val_loss": 2.5}, "elapsed_s": 1.5},
        ),
        (
            "POST",
            "/v1/trials/tr_0/complete",
            {"worker_id": "w-1", "metrics": {"val_loss": 1.25}, "cost": {"gpu_seconds": 3}},
        ),
        ("POST", "/v1/trials/tr_0/fail", {"worker_id": "w-1", "error": "OOM", "retry": True}),
        ("POST", "/v1/trials/tr_0/infeasible", {"worker_id": "w-1", "reason": "diverged"}),
    ]
    keys = [r.headers.get("idempotency-key") for r in service.sent]
    assert keys == [None, None, None, "k", "f", None]


def test_add_imports_a_finished_trial_and_batches_are_one_request(
    hpo: HPOClient, service: Service
) -> None:
    service.answer(201, trial_json(source="user"))
    service.answer(201, {"trials": [trial_json(0), trial_json(1, state="requested", result=None)]})
    trial = hpo.trials.add("st_1", {"lr": 0.01}, {"val_loss": 1.0}, idempotency_key="imp")
    batch = hpo.trials.add_batch("st_1", [{"params": {"lr": 0.01}}, {"params": {"lr": 0.02}}])
    first, second = service.sent
    assert (first.url.path, body(first)) == (
        "/v1/studies/st_1/trials",
        {"params": {"lr": 0.01}, "metadata": None, "result": {"metrics": {"val_loss": 1.0}}},
    )
    assert first.headers["idempotency-key"] == "imp"
    assert (second.url.path, body(second)) == (
        "/v1/studies/st_1/trials:batch",
        {"trials": [{"params": {"lr": 0.01}}, {"params": {"lr": 0.02}}]},
    )
    assert trial.source == "user"
    assert [t.state for t in batch] == ["completed", "requested"]


def test_update_sends_only_the_changes_and_delete_answers_nothing(
    hpo: HPOClient, service: Service
) -> None:
    service.answer(200, study_json(state="paused"))
    service.answer(204)
    assert hpo.studies.update("st_1", state="paused").state == "paused"
    assert hpo.studies.delete("st_1") is None
    patch, delete = service.sent
    assert (patch.method, patch.url.path, body(patch)) == (
        "PATCH",
        "/v1/studies/st_1",
        {"state": "paused"},
    )
    assert (delete.method, delete.url.path) == ("DELETE", "/v1/studies/st_1")


# Typed answers ----------------------------------------------------------------------------
def test_a_study_parses_into_typed_fields(hpo: HPOClient, service: Service) -> None:
    service.answer(200, study_json())
    study = hpo.studies.get("st_1")
    assert isinstance(study, Study)
    assert study.created_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert study.objective.metric == "val_loss"
    assert study.space.names() == ["lr", "layers", "opt"]
    assert study.space.parameters[2].choices == ["adamw", "muon"]
    assert study.trial_counts == {"completed": 2, "active": 1}
    assert study.objective_names() == ["val_loss"]


def test_a_trial_keeps_int_params_ints_and_reads_its_value(
    hpo: HPOClient, service: Service
) -> None:
    service.answer(200, trial_json())
    trial = hpo.trials.get("tr_0")
    assert isinstance(trial, Trial)
    assert service.last.url.path == "/v1/trials/tr_0"
    assert trial.params == {"lr": 0.001, "layers": 4, "opt": "muon"}
    assert isinstance(trial.params["layers"], int)
    assert trial.value("val_loss") == 1.25
    assert trial.value("accuracy") is None
    assert trial.measurements[0].step == 10
    assert trial.finished_at == datetime(2025, 3, 1, 12, 0, 3, tzinfo=UTC)


def test_worker_answers_parse(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"trials": [trial_json(state="active")], "study_state": "active"})
    service.answer(200, {"lease_expires_at": "2025-03-01T12:05:00+00:00", "should_stop": True})
    service.answer(200, {"should_stop": False})
    batch = hpo.trials.suggest("st_1", "w-1")
    assert [t.id for t in batch.trials] == ["tr_0"]
    assert batch.study_state == "active"
    beat = hpo.trials.heartbeat("tr_0", "w-1")
    assert (beat.should_stop, beat.lease_expires_at.minute) == (True, 5)
    assert hpo.trials.report("tr_0", "w-1", 1, {"val_loss": 3.0}).should_stop is False


def test_best_and_extrapolate(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"trials": []})
    service.answer(200, {"trials": [trial_json(3)]})
    service.answer(
        200,
        {
            "parameterization": "mup",
            "proxy": {"width": 256, "depth": 4},
            "target": {"width": 4096, "depth": 4},
            "multipliers": {"width": 16.0, "depth": 1.0, "batch": 1.0, "duration": 1.0},
            "params": {"lr.hidden": 6.25e-05, "beta1": 0.9},
            "rules": [
                {
                    "param": "lr.hidden",
                    "proxy_value": 0.001,
                    "target_value": 6.25e-05,
                    "factor": 0.0625,
                    "rule": "1/width",
                }
            ],
            "warnings": [],
        },
    )
    assert hpo.studies.best("st_1") == []
    assert [t.number for t in hpo.studies.best("st_1")] == [3]
    result = hpo.studies.extrapolate("st_1", {"width": 4096}, trial_id="tr_3")
    assert isinstance(result, ExtrapolationResult)
    assert result.rules[0].factor == 0.0625
    assert body(service.last) == {"target": {"width": 4096}, "trial_id": "tr_3"}
    assert service.last.url.path == "/v1/studies/st_1/extrapolate"


def test_fields_a_newer_server_adds_are_kept_not_rejected(hpo: HPOClient, service: Service) -> None:
    service.answer(200, study_json(priority="high", space={"parameters": [], "groups": ["a"]}))
    study = hpo.studies.get("st_1")
    assert study.model_extra == {"priority": "high"}
    assert study.space.model_extra == {"groups": ["a"]}
    assert study.model_dump(mode="json")["priority"] == "high"


def test_fields_an_older_server_lacks_default(hpo: HPOClient, service: Service) -> None:
    old = study_json()
    for added in ("objectives", "constraints", "stopping", "effective_space", "updated_at"):
        del old[added]
    service.answer(200, old)
    study = hpo.studies.get("st_1")
    assert (study.objectives, study.updated_at) == (None, None)


def test_an_answer_that_breaks_the_contract_fails_loudly(hpo: HPOClient, service: Service) -> None:
    broken = study_json()
    del broken["state"]
    service.answer(200, broken)
    with pytest.raises(pydantic.ValidationError, match="state"):
        hpo.studies.get("st_1")


def test_the_json_methods_still_answer_plain_dicts(hpo: HPOClient, service: Service) -> None:
    service.answer(200, study_json(priority="high"))
    raw = hpo.get_study("st_1")
    assert raw == study_json(priority="high")


# Errors -----------------------------------------------------------------------------------
def test_a_problem_becomes_a_problem_error(hpo: HPOClient, service: Service) -> None:
    service.problem(404, "not-found", "Not Found", "study 'st_x' does not exist")
    with pytest.raises(ProblemError) as caught:
        hpo.studies.get("st_x")
    err = caught.value
    assert (err.status, err.slug, err.title) == (404, "not-found", "Not Found")
    assert err.detail == "study 'st_x' does not exist"


def test_a_validation_problem_carries_its_field_errors(hpo: HPOClient, service: Service) -> None:
    service.problem(
        422,
        "validation-error",
        "Invalid request",
        "1 invalid field",
        errors=[{"loc": ["body", "space"], "msg": "Field required"}],
    )
    with pytest.raises(ProblemError) as caught:
        hpo.studies.create({"name": "x"})
    assert caught.value.slug == "validation-error"
    assert caught.value.errors == [{"loc": ["body", "space"], "msg": "Field required"}]


def test_a_conflict_from_a_finishing_call_is_a_problem_error(
    hpo: HPOClient, service: Service
) -> None:
    service.problem(409, "trial-not-leased", "Conflict", "trial tr_0 is leased to w-2")
    with pytest.raises(ProblemError) as caught:
        hpo.trials.complete("tr_0", "w-1", {"val_loss": 1.0})
    assert (caught.value.status, caught.value.slug) == (409, "trial-not-leased")


def test_an_error_without_a_json_body_still_raises_with_its_text(
    hpo: HPOClient, service: Service
) -> None:
    service.answer(502, content=b"upstream down", headers={"content-type": "text/plain"})
    with pytest.raises(ProblemError) as caught:
        hpo.trials.list("st_1")
    assert (caught.value.status, caught.value.detail) == (502, "upstream down")


# Pagination -------------------------------------------------------------------------------
def test_iter_follows_next_page_token_to_the_end(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"items": [trial_json(0), trial_json(1)], "next_page_token": "p2"})
    service.answer(200, {"items": [trial_json(2)], "next_page_token": "p3"})
    service.answer(200, {"items": [], "next_page_token": None})
    trials = hpo.trials.iter("st_1", state="completed", page_size=2)
    assert not service.sent  # nothing is fetched before the iteration starts
    assert [t.number for t in trials] == [0, 1, 2]
    assert [query(r) for r in service.sent] == [
        {"state": ["completed"], "page_size": ["2"]},
        {"state": ["completed"], "page_size": ["2"], "page_token": ["p2"]},
        {"state": ["completed"], "page_size": ["2"], "page_token": ["p3"]},
    ]
    assert {r.url.path for r in service.sent} == {"/v1/studies/st_1/trials"}


def test_iter_stops_fetching_when_the_caller_stops(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"items": [study_json(id="st_1")], "next_page_token": "p2"})
    service.answer(200, {"items": [study_json(id="st_2")], "next_page_token": None})
    studies = hpo.studies.iter(family="gpt")
    assert next(studies).id == "st_1"
    assert len(service.sent) == 1
    assert [s.id for s in studies] == ["st_2"]
    assert query(service.last) == {"family": ["gpt"], "page_token": ["p2"]}


def test_a_page_parses_with_its_token(hpo: HPOClient, service: Service) -> None:
    service.answer(200, {"items": [study_json()], "next_page_token": "abc"})
    page = hpo.studies.list()
    assert isinstance(page, StudyPage)
    assert (len(page.items), page.next_page_token) == (1, "abc")
    assert isinstance(page.items[0], Study)
