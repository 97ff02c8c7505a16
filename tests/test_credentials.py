"""Bearer tokens: issued, hashed, verified in constant time, loaded from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinewatch.errors import CredentialsError
from spinewatch.runtime.credentials import (
    CredentialStore,
    Grant,
    bearer_token,
    issue_token,
    token_digest,
)


class UserGrant(Grant):
    user: str


def _store(*users: str) -> tuple[CredentialStore[UserGrant], list[str]]:
    issued = [issue_token() for _ in users]
    tables = [
        {"id": t.token_id, "sha256": t.sha256, "user": user}
        for t, user in zip(issued, users, strict=True)
    ]
    return CredentialStore.from_tables(tables, UserGrant), [t.token for t in issued]


def test_a_valid_token_yields_its_grant_and_nothing_else_does() -> None:
    store, (alice, bob) = _store("alice", "bob")
    assert store.authenticate(alice) == UserGrant(user="alice")
    assert store.authenticate(bob) == UserGrant(user="bob")
    # Same id, other secret; unknown id; malformed; missing.
    forged = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    for bad in (forged, issue_token().token, "swt_short", "", None):
        assert store.authenticate(bad) is None


def test_only_the_digest_is_stored() -> None:
    issued = issue_token()
    assert issued.sha256 == token_digest(issued.token)
    assert issued.token not in issued.sha256
    assert issued.token.startswith(f"swt_{issued.token_id}_")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", None),
        ("Basic abc", None),
        (None, None),
        ("Bearer ", None),
    ],
)
def test_bearer_header_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_a_credentials_file_loads_and_errors_name_the_record_not_the_value(tmp_path: Path) -> None:
    issued = issue_token()
    good = tmp_path / "good.toml"
    good.write_text(
        f'[[token]]\nid = "{issued.token_id}"\nsha256 = "{issued.sha256}"\nuser = "dr-a"\n'
    )
    assert CredentialStore.from_file(good, UserGrant).authenticate(issued.token) == UserGrant(
        user="dr-a"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[token]]\nid = "{issued.token_id}"\nsha256 = "secret-not-hex"\n')
    with pytest.raises(CredentialsError) as caught:
        CredentialStore.from_file(bad, UserGrant)
    message = str(caught.value)
    assert "token[0]" in message
    assert "sha256" in message
    assert "user" in message
    assert "secret-not-hex" not in message
    twice = tmp_path / "twice.toml"
    stanza = f'[[token]]\nid = "{issued.token_id}"\nsha256 = "{issued.sha256}"\nuser = "x"\n'
    twice.write_text(stanza * 2)
    with pytest.raises(CredentialsError, match="used twice"):
        CredentialStore.from_file(twice, UserGrant)
    with pytest.raises(CredentialsError, match="cannot be read"):
        CredentialStore.from_file(tmp_path / "absent.toml", UserGrant)
