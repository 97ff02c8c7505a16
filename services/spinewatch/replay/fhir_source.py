"""A FHIR R4 bundle replayed straight to Kafka: mapped here, as the gateway would map it.

The mapping is `spinewatch.fhir.map_fhir`, the same pure function behind
the gateway's `/fhir/r4`, with the same pseudonym key, so a bundle gives
the same events (the same ids) through either door. Records are the
mapped events in the mapping's order, then the document parts that gave
no event, each positioned as the mapping names it ("entry[3]
(Observation)"); the rejects file cites those positions. Entries
reference each other (an Observation its Procedure), so the bundle is
mapped whole, never in pieces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spinewatch.errors import ReplayError
from spinewatch.replay.records import Record


def fhir_records(
    document: Any, source: str, site_id: str, key: bytes, received_at: datetime
) -> list[Record]:
    # Imported here: the FHIR models (fhir.resources) take a while to load,
    # and only a bundle needs them.
    from spinewatch.fhir import FhirContext, map_fhir  # noqa: PLC0415

    try:
        context = FhirContext(
            source=source, site_id=site_id, pseudonym_key=key, received_at=received_at
        )
    except ValueError as exc:  # the context's own checks (key length, UTC)
        raise ReplayError(f"FHIR mapping: {exc}") from None
    mapping = map_fhir(document, context)
    records = [
        Record(i, f"mapped event {i} ({event.event_type})", event.model_dump_json().encode())
        for i, event in enumerate(mapping.events)
    ]
    start = len(records)
    records += [
        Record(start + j, reject.entry, None, reject.errors)
        for j, reject in enumerate(mapping.rejects)
    ]
    return records
