"""Who is calling the alerting API: a named on-call user, or nobody (401).

An acknowledgement silences the page for everyone, so the API must know
who acknowledged, and it must be someone: before this, anyone who reached
the port could acknowledge any alert under any name in the body (`{"by":
"mallory-anonymous"}` answered 200 and reached the pager). The name now
comes only from the identity:

* a bearer token (`Authorization: Bearer swt_...`), looked up in
  `SPINEWATCH_ALERTING_CREDENTIALS_FILE`: one `[[token]]` table per person
  or on-call role, with `user = "dr-jones"` (`spinewatch token new --user
  dr-jones` prints the token once, and the table). The file holds hashes
  only (`runtime/credentials.py`);
* or, where a reverse proxy already authenticates staff (single sign-on),
  the user it names in `SPINEWATCH_ALERTING_TRUSTED_PROXY_HEADER` (e.g.
  `X-Forwarded-User`). Believed only when the TCP peer is one of
  `SPINEWATCH_ALERTING_TRUSTED_PROXIES`: from anywhere else the header is
  what anyone can type, and is ignored (and counted).

A token, when sent, decides: a bad one is refused even from the proxy,
never rescued by a header. Users are restricted codes (`dr-jones`,
`oncall-2`): they go into the alert state, webhooks and the audit topic,
so no free text does. Every route but `/metrics`, `/healthz` and `/readyz`
needs an identity; a refusal is a 401 with `WWW-Authenticate: Bearer` and
counts in `spinewatch_api_requests_refused_total{reason}`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import Field

from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts.control import USER_PATTERN
from spinewatch.runtime.credentials import CredentialStore, Grant, bearer_token

# A staff identity or on-call code: lower-case letters, digits, '.', '_', '-'
# (defined with the contracts, since a chart reset names who decided it).
_USER = re.compile(USER_PATTERN)
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_CHALLENGE = 'Bearer realm="spinewatch-alerting"'


class OnCallGrant(Grant):
    """What an alerting token stands for: one named on-call user."""

    user: str = Field(pattern=USER_PATTERN)


class Refusal(StrEnum):
    """Why a request had no identity (a bounded metric label)."""

    MISSING = "missing"  # no token, no believable proxy header
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a label: malformed, unknown or revoked
    UNTRUSTED_PROXY = "untrusted_proxy"  # the user header, from a peer that is no trusted proxy
    INVALID_USER = "invalid_user"  # the trusted proxy named no valid user


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    via: Literal["token", "proxy"]


CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
Network = IPv4Network | IPv6Network


class Identities:
    """Tells who a request comes from, from the configured sources only."""

    def __init__(
        self,
        tokens: CredentialStore[OnCallGrant] | None = None,
        proxy_header: str | None = None,
        proxies: Iterable[Network] = (),
    ) -> None:
        self.tokens = tokens
        self.proxy_header = proxy_header
        self.proxies = tuple(proxies)

    @classmethod
    def from_settings(cls, settings: AlertingSettings) -> Identities:
        """Raises CredentialsError (naming the table and field) for a bad credentials file."""
        tokens = None
        if settings.credentials_file is not None:
            tokens = CredentialStore.from_file(settings.credentials_file, OnCallGrant)
        return cls(tokens, settings.trusted_proxy_header, settings.proxy_networks)

    @property
    def configured(self) -> bool:
        return self.tokens is not None or self.proxy_header is not None

    def identify(self, request: web.Request) -> Caller | Refusal:
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            grant = self.tokens.authenticate(bearer_token(authorization)) if self.tokens else None
            return Refusal.INVALID_TOKEN if grant is None else Caller(grant.user, "token")
        if self.proxy_header is None or self.proxy_header not in request.headers:
            return Refusal.MISSING
        if not self._from_trusted_proxy(request):
            return Refusal.UNTRUSTED_PROXY
        user = request.headers[self.proxy_header]
        return Caller(user, "proxy") if _USER.fullmatch(user) else Refusal.INVALID_USER

    def _from_trusted_proxy(self, request: web.Request) -> bool:
        # The TCP peer itself, never a forwarded-for header (anyone can send one).
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            return False
        try:
            address = ip_address(peer[0])
        except ValueError:  # a Unix socket has no address to trust
            return False
        return any(address in network for network in self.proxies)

    def middleware(self, on_refused: Callable[[Refusal], None]) -> Middleware:
        """Every route but the open ones: an identity in `request[CALLER]`, or 401."""

        @web.middleware
        async def require_identity(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path in OPEN_PATHS:
                return await handler(request)
            found = self.identify(request)
            if isinstance(found, Refusal):
                on_refused(found)
                return _unauthorized(found)
            request[CALLER] = found
            return await handler(request)

        return require_identity


def _unauthorized(refusal: Refusal) -> web.Response:
    challenge = _CHALLENGE
    if refusal is Refusal.INVALID_TOKEN:
        challenge += ', error="invalid_token"'
    return web.json_response(
        {"error": "authentication required: a bearer token of an on-call user", "reason": refusal},
        status=401,
        headers={"WWW-Authenticate": challenge},
    )
