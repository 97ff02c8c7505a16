"""Bearer tokens for every inbound door: issued once, stored only as hashes.

One scheme for the gateway (a token per hospital source, bound to the sites
it may write) and the alerting API (a token per named on-call user). Why
tokens rather than mutual TLS: every interface engine a hospital runs
(Mirth/NextGen Connect, Rhapsody, Cloverleaf, Epic Bridges) can send an
`Authorization: Bearer` header, while client certificates need a PKI per
hospital and TLS termination that passes the certificate through; tokens
are issued and revoked by editing one file. TLS itself belongs to the
ingress in front of the service (deploy/README.md).

A token is `swt_<id>_<secret>`: the public id selects the stored record,
the 256-bit secret is what proves possession. Only SHA-256 of the whole
token is stored. A slow password hash (argon2, bcrypt) would add nothing:
it defends low-entropy human passwords against guessing, and a 256-bit
random secret cannot be guessed; SHA-256 keeps verification in
microseconds on every request. The digest is compared with
`hmac.compare_digest`, and an unknown id is compared against a dummy digest,
so timing tells an attacker neither whether an id exists nor how many
leading bytes matched.

The credentials file is TOML, one `[[token]]` table per credential:

    [[token]]
    id = "k3f9q2x7"
    sha256 = "<64 hex digits>"
    # ...fields of the door's grant, e.g. source/sites or user

`spinewatch token new` prints a fresh token once, with the table to add.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spinewatch.errors import CredentialsError

TOKEN_PREFIX = "swt"  # noqa: S105 - a public prefix, not a secret
_TOKEN = re.compile(r"^swt_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_BEARER = re.compile(r"^Bearer ([!-~]{1,200})$")
# Compared against when the id is unknown, so a miss costs what a hit costs.
_DUMMY_DIGEST = hashlib.sha256(b"spinewatch: no such token").hexdigest()


class Grant(BaseModel):
    """What a credential may do; each door extends it with its own fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


G = TypeVar("G", bound=Grant)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9]{8}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # shown once, to the person who installs it
    token_id: str
    sha256: str


def issue_token() -> IssuedToken:
    """A fresh token: 8-character id, 256-bit secret."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token_id = "".join(secrets.choice(alphabet) for _ in range(8))
    token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    return IssuedToken(token, token_id, token_digest(token))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    if authorization is None:
        return None
    match = _BEARER.match(authorization)
    return match.group(1) if match else None


class CredentialStore(Generic[G]):
    """Token id -> (digest, grant), verified in constant time."""

    def __init__(self, grants: Mapping[str, tuple[str, G]]) -> None:
        self._grants = dict(grants)

    def __len__(self) -> int:
        return len(self._grants)

    def authenticate(self, token: str | None) -> G | None:
        """The grant of a valid token; None for a missing, malformed or unknown one."""
        if token is None:
            return None
        match = _TOKEN.match(token)
        token_id = match.group(1) if match else ""
        digest, grant = self._grants.get(token_id, (_DUMMY_DIGEST, None))
        if hmac.compare_digest(token_digest(token), digest) and match:
            return grant
        return None

    @classmethod
    def from_file(cls, path: Path, grant_type: type[G]) -> CredentialStore[G]:
        """Load a TOML credentials file; errors name the table and field, never a value."""
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CredentialsError(f"{path}: cannot be read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise CredentialsError(f"{path}: not valid TOML ({exc})") from None
        return cls.from_tables(document.get("token", []), grant_type, origin=str(path))

    @classmethod
    def from_tables(
        cls, tables: Any, grant_type: type[G], origin: str = "credentials"
    ) -> CredentialStore[G]:
        if not isinstance(tables, list):
            raise CredentialsError(f"{origin}: `token` must be an array of tables")
        grants: dict[str, tuple[str, G]] = {}
        for i, table in enumerate(tables):
            if not isinstance(table, dict):
                raise CredentialsError(f"{origin}: token[{i}] must be a table")
            own = {key: table[key] for key in ("id", "sha256") if key in table}
            rest = {key: value for key, value in table.items() if key not in own}
            problems: list[str] = []
            for model, part in ((_Record, own), (grant_type, rest)):
                try:
                    model.model_validate(part)
                except ValidationError as exc:
                    problems += [
                        ".".join(str(p) for p in err["loc"]) + f" ({err['type']})"
                        for err in exc.errors(include_input=False, include_url=False)
                    ]
            if problems:
                raise CredentialsError(f"{origin}: token[{i}]: {', '.join(problems)}")
            record = _Record.model_validate(own)
            grant = grant_type.model_validate(rest)
            if record.id in grants:
                raise CredentialsError(f"{origin}: token[{i}]: id is used twice")
            grants[record.id] = (record.sha256, grant)
        return cls(grants)
