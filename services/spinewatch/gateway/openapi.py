"""The gateway's OpenAPI 3.1 document: request bodies from the contracts, answers as models.

FastAPI never validates an event body itself (its 422 echoes the input,
and the contracts' own validator, `parse_event`, must be the one that
judges). So the request bodies are declared here instead: the event
schema is the contract union's own JSON Schema (`TypeAdapter(Event)`),
put into `components/schemas` and referenced from each operation, so
clients, code generators and schemathesis see exactly what is validated.
The answer models below are for the document only; the routes build the
same shapes as plain JSON.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, TypeAdapter

from spinewatch.contracts import Event

EVENT_REF = "#/components/schemas/Event"
JSON_TYPES = ("application/json",)
FHIR_TYPES = ("application/fhir+json", "application/json")

EventStatus = Literal["accepted", "duplicate", "conflict", "rejected", "forbidden", "retry"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(_Answer):
    """One reason an event was rejected: where, what kind, why (never the value)."""

    loc: str
    type: str
    msg: str


class EventAnswer(_Answer):
    status: EventStatus
    event_id: UUID | None = None
    errors: list[FieldProblem] | None = None
    reason: str | None = None


class BatchItemAnswer(EventAnswer):
    index: int


class BatchAnswer(_Answer):
    accepted: int
    duplicate: int
    conflict: int
    rejected: int
    forbidden: int
    retry: int
    results: list[BatchItemAnswer]


class FhirItemAnswer(BatchItemAnswer):
    # A document part that gave no event: its position ("entry[3] (Observation)").
    entry: str | None = None


class FhirAnswer(_Answer):
    accepted: int
    duplicate: int
    conflict: int
    rejected: int
    forbidden: int
    retry: int
    results: list[FhirItemAnswer]


class RequestProblem(_Answer):
    """A request refused as a whole (authentication, size, media type, rate)."""

    status: Literal["unauthorized", "too_large", "unsupported_media_type", "rate_limited"]
    reason: str


# The answers every write endpoint may give before it looks at an event.
REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": RequestProblem, "description": "Missing or invalid credentials."},
    413: {"model": RequestProblem, "description": "The body exceeds the size limit."},
    415: {"model": RequestProblem, "description": "The body is not JSON."},
    429: {"model": RequestProblem, "description": "The source's rate budget is spent."},
}


class HealthAnswer(BaseModel):
    status: Literal["ok", "failing"]
    failing: list[str]
    checks: list[dict[str, Any]]


def json_body(
    schema: dict[str, Any], description: str, media_types: tuple[str, ...] = JSON_TYPES
) -> dict[str, Any]:
    """`openapi_extra` declaring a required JSON request body."""
    content = {media: {"schema": schema} for media in media_types}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def install_document(app: FastAPI, extra_schemas: dict[str, Any] | None = None) -> None:
    """Serve a document whose components include the event contracts."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            event = TypeAdapter(Event).json_schema(
                mode="validation", ref_template="#/components/schemas/{model}"
            )
            components.update(event.pop("$defs", {}))
            components["Event"] = event
            components.update(extra_schemas or {})
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
