"""The investigation workflow's HTTP routes (`alerting/investigations.py` decides).

Every route is behind the identity middleware (`alerting/identities.py`):
who is the authenticated caller, never a body field. Bodies are pydantic
models with unknown fields refused (`domain/alerts/investigation.py`);
a bad one is a 400 listing each field's error (field, type, message),
never the value sent.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from spinewatch.alerting.identities import CALLER
from spinewatch.alerting.investigations import UNKNOWN, Answer, Workflow, investigation_of
from spinewatch.domain.alerts.investigation import (
    AcknowledgeBody,
    CloseBody,
    InvestigateBody,
    ResetBody,
    in_the_future,
)

Json = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


def _field_errors(exc: ValidationError) -> list[Json]:
    """Where and what, never the value: pydantic's `input` and `ctx` are left out."""
    return [
        {
            "field": ".".join(map(str, error["loc"])) or "<body>",
            "type": error["type"],
            "message": error["msg"],
        }
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    ]


async def _body(request: web.Request, model: type[M], *, optional: bool) -> M | web.Response:
    raw = await request.read()
    if optional and not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        return web.json_response(
            {"error": "invalid request body", "fields": _field_errors(exc)}, status=400
        )


def _answer(answer: Answer) -> web.Response:
    return web.json_response(answer.body, status=answer.status)


def _future(name: str) -> web.Response:
    return web.json_response(
        {
            "error": "invalid request body",
            "fields": [{"field": name, "type": "in_the_future",
                        "message": "a reset takes effect from cases already performed: "
                                   "give an instant that is not in the future"}],
        },
        status=400,
    )  # fmt: skip


class InvestigationRoutes:
    """The workflow's HTTP handlers (the service adds them to its application)."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/alerts/{fingerprint}/ack", self._ack)
        app.router.add_post("/alerts/{fingerprint}/investigate", self._investigate)
        app.router.add_post("/alerts/{fingerprint}/close", self._close)
        app.router.add_post("/alerts/{fingerprint}/reset", self._reset)
        app.router.add_get("/alerts/{fingerprint}/history", self._history)

    async def _ack(self, request: web.Request) -> web.Response:
        # Who acknowledged is the identity, never what a body says: a body
        # naming someone (the old {"by": ...}) is refused, not overruled.
        body = await _body(request, AcknowledgeBody, optional=True)
        if isinstance(body, web.Response):
            return body
        fingerprint, who = request.match_info["fingerprint"], request[CALLER].user
        return _answer(await self.workflow.acknowledge(fingerprint, who, body.reason))

    async def _investigate(self, request: web.Request) -> web.Response:
        body = await _body(request, InvestigateBody, optional=False)
        if isinstance(body, web.Response):
            return body
        fingerprint, who = request.match_info["fingerprint"], request[CALLER].user
        return _answer(await self.workflow.investigate(fingerprint, who, body.reason))

    async def _close(self, request: web.Request) -> web.Response:
        body = await _body(request, CloseBody, optional=False)
        if isinstance(body, web.Response):
            return body
        if in_the_future(body.reset_effective_after, self.workflow.clock()):
            return _future("reset_effective_after")
        fingerprint, who = request.match_info["fingerprint"], request[CALLER].user
        return _answer(await self.workflow.close(fingerprint, who, body))

    async def _reset(self, request: web.Request) -> web.Response:
        body = await _body(request, ResetBody, optional=False)
        if isinstance(body, web.Response):
            return body
        if in_the_future(body.effective_after, self.workflow.clock()):
            return _future("effective_after")
        fingerprint, who = request.match_info["fingerprint"], request[CALLER].user
        return _answer(await self.workflow.reset(fingerprint, who, body))

    async def _history(self, request: web.Request) -> web.Response:
        fingerprint = request.match_info["fingerprint"]
        alert = await self.workflow.store.alert(fingerprint)
        if alert is None:
            return _answer(UNKNOWN)
        return web.json_response(
            {
                "fingerprint": fingerprint,
                "investigation": asdict(investigation_of(alert)),
                "transitions": await self.workflow.steps.history(fingerprint),
            }
        )
