"""Keyed pseudonyms: FHIR identities in, UUIDs out, the identities never kept.

Every id an event carries is HMAC-SHA256(key, message) cut to 128 bits and
stamped as an RFC 9562 version-8 ("custom") UUID. The key (the gateway's
setting) never leaves the process; without it a pseudonym cannot be
linked back to a FHIR reference, even by someone who can guess references
("Patient/1", "Patient/2", ...), which a plain hash would allow.

Messages (| separates fields; a source cannot contain one, so the encoding
is unambiguous even though identities may):

    patient|<source>|<subject identity>
    procedure|<source>|<Procedure identity>
    event|<source>|<event type>|<resource identity>

The sender's `source` is in every message because FHIR logical ids are only
unique on the server that issued them: two hospitals' `Procedure/1` must not
become one procedure. A follow-up therefore links to its procedure only
when both come from the same source.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

MIN_KEY_BYTES = 32  # RFC 2104: a key shorter than the hash output weakens HMAC

_VERSION_8 = 0x80
_VARIANT_RFC = 0x80


def _keyed_uuid(key: bytes, message: str) -> UUID:
    digest = bytearray(hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | _VERSION_8
    digest[8] = (digest[8] & 0x3F) | _VARIANT_RFC
    return UUID(bytes=bytes(digest))


def patient_ref(key: bytes, source: str, subject: str) -> UUID:
    return _keyed_uuid(key, f"patient|{source}|{subject}")


def procedure_id(key: bytes, source: str, procedure: str) -> UUID:
    return _keyed_uuid(key, f"procedure|{source}|{procedure}")


def event_id(key: bytes, source: str, event_type: str, resource: str) -> UUID:
    return _keyed_uuid(key, f"event|{source}|{event_type}|{resource}")
