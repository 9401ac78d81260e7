"""Property-based fuzzing of the whole API from its own OpenAPI document.

Schemathesis generates requests for every operation (valid and invalid), sends them with
a real admin key through the ASGI app, and checks that no answer is a 5xx and every answer
conforms to the documented schema. It runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from hpo_service.client import HPOClient
from tests.builders import study

# Positive-data acceptance is left out on purpose: the schema cannot express cross-field
# rules (low < high, a condition's parent must exist), so schema-valid bodies may be 422.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def test_api_never_errors_and_matches_its_schema(
    app_client: TestClient, keys, client: HPOClient
) -> None:
    client.create_study(study())  # so id-taking operations meet real rows too
    schema = schemathesis.openapi.from_asgi("/openapi.json", app_client.app)
    headers = {"Authorization": f"Bearer {keys.admin}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        fuzz()
