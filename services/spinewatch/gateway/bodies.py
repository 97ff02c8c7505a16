"""Reading request bodies within a byte limit, and the answers of refused requests.

The declared `Content-Length` is checked before anything is read; a body
sent without one (chunked) is counted as it streams and refused the
moment it passes the limit, so an oversized request never costs more than
the limit in memory.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from spinewatch.gateway.auth import Refusal


class Refused(Exception):
    """A request refused as a whole, before any event in it was examined."""

    def __init__(
        self, status: int, code: Refusal, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"status": _STATUS[self.code], "reason": self.reason}
        if self.status == 422:
            body = {
                "status": "rejected",
                "errors": [{"loc": "<root>", "type": self.code.value, "msg": self.reason}],
            }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


_STATUS = {
    Refusal.UNAUTHENTICATED: "unauthorized",
    Refusal.TOO_LARGE: "too_large",
    Refusal.TOO_MANY_EVENTS: "too_large",
    Refusal.RATE_LIMITED: "rate_limited",
    Refusal.UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    Refusal.JSON_INVALID: "rejected",
    Refusal.NOT_AN_ARRAY: "rejected",
    Refusal.NOT_AN_OBJECT: "rejected",
    Refusal.SITE_ID_MISSING: "rejected",
    Refusal.SITE_NOT_GRANTED: "forbidden",
    Refusal.EMPTY_BATCH: "rejected",
}


def unauthenticated() -> Refused:
    return Refused(
        401,
        Refusal.UNAUTHENTICATED,
        "missing or invalid credentials: send Authorization: Bearer <token>",
        {"WWW-Authenticate": 'Bearer realm="spinewatch"'},
    )


def require_json(request: Request, accepted: tuple[str, ...] = ("application/json",)) -> None:
    """Refuse a declared media type that is not JSON (none declared is taken as JSON)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media in accepted or (media.startswith("application/") and media.endswith("+json")):
        return
    raise Refused(415, Refusal.UNSUPPORTED_MEDIA_TYPE, "send the body as " + " or ".join(accepted))


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or `Refused` (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Refused:
    return Refused(413, Refusal.TOO_LARGE, f"the body exceeds {limit} bytes")
