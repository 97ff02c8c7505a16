"""Property-based tests of the gateway's HTTP API from its own OpenAPI document.

schemathesis reads `/openapi.json` from a real gateway (real broker, real
Redis) and sends requests generated from it, valid and invalid, with a
valid token: no answer may be a server error (5xx), and every answer must
match what the document declares (status code, media type, body schema).
The gateway runs on a loop of its own thread: schemathesis' client blocks.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from spinewatch.gateway.auth import SourceGrant
from tests.gateways import gateway_in_thread, gateway_settings, write_credentials
from tests.probes import get_json
from tests.servers import redis_server

pytestmark = pytest.mark.e2e

# The document's own site and source patterns make a random event rarely
# this credential's, so most valid events come back 403; the fuzzing is of
# the intake, its limits and its answers, not of the engine.
GRANT = SourceGrant(source="ris-fuzz", sites=("fuzz-a",), rate_per_minute=1_000_000)


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as redis_url:
        credentials = write_credentials(tmp_path_factory.mktemp("fuzz"), {"fuzz": GRANT})
        settings = gateway_settings(
            kafka_bootstrap,
            redis_url,
            credentials,
            app_id=f"s{uuid.uuid4().hex[:12]}",
            max_batch_events=10,
            pseudonym_key="schemathesis-pseudonym-key-0123456789abcdef",
        )
        with gateway_in_thread(settings) as url:
            _TOKEN["fuzz"] = credentials.tokens["fuzz"]
            yield url


_TOKEN: dict[str, str] = {}
EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# Conditional rules of the contracts (if/then, not, contains) that
# schemathesis' generator cannot build values from ("unsupported schema").
# They only narrow what is valid, so without them the generated requests
# are a superset (more of them rejected with 422), still all answerable
# without a 5xx; the response schemas keep every rule.
CONDITIONAL = frozenset({"if", "then", "else", "not", "contains", "minContains", "maxContains",
                         "dependentSchemas", "dependentRequired"})  # fmt: skip


def generable(node: Any) -> Any:
    """`node` without the conditional keywords, and without the allOf parts they emptied."""
    if isinstance(node, list):
        return [generable(item) for item in node]
    if not isinstance(node, dict):
        return node
    pruned = {key: generable(value) for key, value in node.items() if key not in CONDITIONAL}
    if "allOf" in pruned:
        pruned["allOf"] = [part for part in pruned["allOf"] if part != {}]
        if not pruned["allOf"]:
            del pruned["allOf"]
    return pruned


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_the_document_allows_or_forbids_gets_a_server_error(
    gateway: str, mode: GenerationMode
) -> None:
    # The strategies of schemathesis' Python API, driven by Hypothesis here:
    # its pytest integration (`from_fixture`) does not run on pytest 9.
    document = get_json(f"{gateway}/openapi.json")[1]
    schema = schemathesis.openapi.from_dict(generable(document))
    results = list(schema.get_all_operations())
    problems = [r.err() for r in results if isinstance(r, Err)]
    assert not problems, problems
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/events", "POST /v1/events/batch", "POST /fhir/r4", "GET /healthz", "GET /readyz",
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {_TOKEN['fuzz']}"}
    answered: Counter[tuple[str, int]] = Counter()
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to negate: no parameters, no body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure says it
        )
        def call(case: Any) -> None:
            response = case.call_and_validate(
                base_url=gateway, headers=headers, timeout=30, checks=CHECKS
            )
            answered[(case.operation.path, response.status_code)] += 1

        call()
    # Both write endpoints were exercised; invalid requests were refused as client errors.
    for path in ("/v1/events", "/v1/events/batch", "/fhir/r4"):
        statuses = {status for p, status in answered if p == path}
        assert statuses, answered
        if mode is GenerationMode.NEGATIVE:
            assert any(400 <= status < 500 for status in statuses), answered
