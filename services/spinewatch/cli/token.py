"""`spinewatch token new`: issue a bearer token, print it once with its credentials entry.

    spinewatch token new --source ris-north --site north-a [--site north-b] [--rate N]
                                        a gateway token (one source, its sites)
    spinewatch token new --user alice   an alerting API token (one on-call user)

The token itself is printed once and stored nowhere: the `[[token]]` table
printed after it holds only its SHA-256 (`runtime/credentials.py`). Add the
table to the service's credentials file and hand the token to whoever
installs it; revoke it by deleting the table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from spinewatch.alerting.identities import OnCallGrant
from spinewatch.gateway.auth import SourceGrant
from spinewatch.runtime.credentials import issue_token


class TokenRequestError(ValueError):
    """The grant asked for is not valid (names the field, never the value)."""


def new_token(
    out: TextIO,
    *,
    source: str | None = None,
    sites: Sequence[str] = (),
    rate_per_minute: int | None = None,
    user: str | None = None,
) -> None:
    """Print a fresh token and its `[[token]]` table for a gateway source or an alerting user."""
    grant = _grant(source, sites, rate_per_minute, user)
    issued = issue_token()
    table: dict[str, Any] = {"id": issued.token_id, "sha256": issued.sha256, **grant}
    out.write("# The token, shown once: give it to whoever installs it, keep no copy.\n")
    out.write(f"{issued.token}\n\n")
    out.write("# Add to the credentials file:\n[[token]]\n")
    for key, value in table.items():
        out.write(f"{key} = {_toml(value)}\n")


def _grant(
    source: str | None, sites: Sequence[str], rate: int | None, user: str | None
) -> dict[str, Any]:
    if user is not None:
        if source is not None or sites or rate is not None:
            raise TokenRequestError("--user excludes --source, --site and --rate")
        try:
            # The alerting service's own rule for a user name (a trailing
            # newline included: pydantic's pattern has no `$` loophole).
            OnCallGrant(user=user)
        except ValidationError:
            raise TokenRequestError(
                "--user must be a short lowercase name ([a-z0-9._-], <= 64)"
            ) from None
        return {"user": user}
    if source is None or not sites:
        raise TokenRequestError("give --source and at least one --site (gateway) or --user")
    grant: dict[str, Any] = {"source": source, "sites": list(sites)}
    if rate is not None:
        grant["rate_per_minute"] = rate
    try:
        SourceGrant.model_validate(grant)
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(p) for p in e["loc"]) + f" ({e['msg']})"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise TokenRequestError(f"invalid grant: {fields}") from None
    return grant


def _toml(value: Any) -> str:
    # JSON strings of these validated ASCII slugs are valid TOML basic strings.
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
