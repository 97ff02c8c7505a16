"""The gateway's HTTP API (FastAPI): one event, a batch, health and metrics.

    POST /v1/events         one event      202 accepted | 200 duplicate | 409 conflict
                                           | 422 rejected | 403 forbidden | 503 retry
    POST /v1/events/batch   JSON array     200 with a result per item
    POST /fhir/r4           FHIR R4        200 with a result per mapped event (fhir_routes)
    GET  /healthz /readyz   probes         200 | 503 naming the failing check
    GET  /metrics           Prometheus     text exposition
    GET  /openapi.json      the OpenAPI 3.1 document

Every write endpoint answers 401 without a valid bearer token, 413 beyond
its byte (or item) limit, 415 for a non-JSON media type and 429 with
`Retry-After` when the source's rate budget is spent. Probes, metrics and
the document need no token (aggregate numbers only). Order of checks:
credentials, media type, rate (one event) or size (a batch, charged its
item count once its body is read), then each event (`intake`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_core import from_json, to_json

import spinewatch
from spinewatch.errors import FieldError
from spinewatch.gateway.auth import Refusal
from spinewatch.gateway.bodies import Refused, read_body, require_json
from spinewatch.gateway.intake import Outcome, Result, error_json, examine
from spinewatch.gateway.metrics import MeasuredApp
from spinewatch.gateway.openapi import (
    EVENT_REF,
    REFUSALS,
    BatchAnswer,
    EventAnswer,
    HealthAnswer,
    install_document,
    json_body,
)
from spinewatch.gateway.state import Gateway, Unavailable

STATUS_OF: dict[Outcome, int] = {
    Outcome.ACCEPTED: 202,
    Outcome.DUPLICATE: 200,
    Outcome.CONFLICT: 409,
    Outcome.REJECTED: 422,
    Outcome.FORBIDDEN: 403,
    Outcome.RETRY: 503,
}
ROUTES = ("/v1/events", "/v1/events/batch", "/fhir/r4", "/healthz", "/readyz", "/metrics",
          "/openapi.json")  # fmt: skip

# Declared for the document (and clients) only; tokens are checked by `Gateway.grant`.
_bearer = HTTPBearer(auto_error=False, description="A source's token (spinewatch token new).")


def create_app(gateway: Gateway) -> MeasuredApp:
    settings = gateway.settings
    app = FastAPI(
        title="spinewatch gateway",
        version=spinewatch.__version__,
        description=(__doc__ or "").split("\n\n", 1)[0],
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> Response:
        gateway.metrics.rejected([exc.code.value])
        return exc.response()

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, exc: Unavailable) -> Response:
        headers = {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse({"status": "retry", "reason": str(exc)}, 503, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer quotes the input ("input"): field, type and message only.
        errors = [
            error_json(FieldError(".".join(str(p) for p in e["loc"]), e["type"], e["msg"]))
            for e in exc.errors()
        ]
        return JSONResponse({"status": "rejected", "errors": errors}, 422)

    @app.post(
        "/v1/events",
        status_code=202,
        summary="Write one event",
        dependencies=[Security(_bearer)],
        response_model=EventAnswer,
        responses={
            200: {"model": EventAnswer, "description": "Duplicate: written before, not again."},
            403: {"model": EventAnswer, "description": "Not this credential's source or site."},
            409: {"model": EventAnswer, "description": "Same event_id, different content."},
            422: {"model": EventAnswer, "description": "Field-level contract errors."},
            503: {"model": EventAnswer, "description": "Not written; retry after Retry-After."},
            **REFUSALS,
        },
        openapi_extra=json_body({"$ref": EVENT_REF}, "One event (schemas/json-schema)."),
    )
    async def post_event(request: Request) -> Response:
        grant = gateway.grant(request)
        require_json(request)
        await gateway.spend(grant, 1)
        raw = await read_body(request, settings.max_body_bytes)
        [result] = await gateway.intake.admit([examine(raw, grant, settings.max_body_bytes)])
        return JSONResponse(
            result.as_json(), STATUS_OF[result.outcome], headers=gateway.retry_headers([result])
        )

    @app.post(
        "/v1/events/batch",
        summary=f"Write up to {settings.max_batch_events} events, with a result per item",
        dependencies=[Security(_bearer)],
        response_model=BatchAnswer,
        responses={
            422: {"model": EventAnswer, "description": "The body is not a non-empty JSON array."},
            503: {"model": EventAnswer, "description": "Redis unavailable; retry."},
            **REFUSALS,
        },
        openapi_extra=json_body(
            {
                "type": "array",
                "items": {"$ref": EVENT_REF},
                "minItems": 1,
                "maxItems": settings.max_batch_events,
            },
            f"A JSON array of 1 to {settings.max_batch_events} events; "
            f"at most {settings.max_batch_bytes} bytes.",
        ),
    )
    async def post_batch(request: Request) -> Response:
        grant = gateway.grant(request)
        require_json(request)
        raw = await read_body(request, settings.max_batch_bytes)
        items = _batch_items(raw, settings.max_batch_events)
        await gateway.spend(grant, len(items))
        examined = [examine(to_json(item), grant, settings.max_body_bytes) for item in items]
        results = await gateway.intake.admit(examined)
        return JSONResponse(batch_answer(results), 200, headers=gateway.retry_headers(results))

    @app.get("/healthz", response_model=HealthAnswer, responses={503: {"model": HealthAnswer}})
    async def healthz() -> Response:
        status, body = await gateway.health.live()
        return JSONResponse(body, status)

    @app.get("/readyz", response_model=HealthAnswer, responses={503: {"model": HealthAnswer}})
    async def readyz() -> Response:
        status, body = await gateway.health.ready()
        return JSONResponse(body, status)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.pseudonym_key is not None:
        # Imported only then: fhir.resources is a large import.
        from spinewatch.gateway.fhir_routes import add_fhir_route  # noqa: PLC0415

        key = settings.pseudonym_key.get_secret_value().encode()
        add_fhir_route(app, gateway, key, _bearer)
    install_document(app)
    return MeasuredApp(app, gateway.metrics)


def _batch_items(raw: bytes, most: int) -> list[Any]:
    try:
        document = from_json(raw, allow_inf_nan=False)
    except ValueError:
        raise Refused(422, Refusal.JSON_INVALID, "the body is not valid JSON") from None
    if not isinstance(document, list):
        raise Refused(422, Refusal.NOT_AN_ARRAY, "the body must be a JSON array of events")
    if not document:
        raise Refused(422, Refusal.EMPTY_BATCH, "the batch holds no event")
    if len(document) > most:
        raise Refused(413, Refusal.TOO_MANY_EVENTS, f"a batch holds at most {most} events")
    return document


def batch_answer(results: list[Result]) -> dict[str, Any]:
    """The batch body: counts per outcome, then each item's answer with its index."""
    body: dict[str, Any] = {o.value: sum(1 for r in results if r.outcome is o) for o in Outcome}
    body["results"] = [{"index": i, **r.as_json()} for i, r in enumerate(results)]
    return body
