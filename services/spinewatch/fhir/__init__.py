"""FHIR R4 -> spinewatch events: a pure translation, no I/O.

The HTTP gateway and `spinewatch replay` hand a parsed FHIR document (a
transaction or collection Bundle, or a single resource) and a context to
`map_fhir`, and get validated contract events and field-level rejects
back. The mapping table, the extensions, the identifier derivation and
the timepoint windows are documented in schemas/fhir/README.md.

Privacy at the door: FHIR subject references become `patient_ref` by a
keyed hash (fhir/pseudonyms.py); no reference, id or value of the input
appears in an event, a reject, or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from spinewatch.fhir import document as _document
from spinewatch.fhir.context import FhirContext, FhirMapping, FhirReject

__all__ = ["FhirContext", "FhirMapping", "FhirReject", "map_fhir", "referenced_procedures"]


def referenced_procedures(document: Mapping[str, Any], ctx: FhirContext) -> frozenset[UUID]:
    """procedure_ids (pseudonymised) that Observations/AdverseEvents in `document` point at
    but that are not in it; the gateway prefetches their performed time."""
    return _document.referenced_procedures(document, ctx)


def map_fhir(
    document: Mapping[str, Any],
    ctx: FhirContext,
    known_procedures: Mapping[UUID, datetime] = _document.NO_PROCEDURES,
) -> FhirMapping:
    """Bundle (transaction|collection) or a single resource -> events + rejects.

    Never raises for bad input (a document that is not FHIR at all gives
    one reject). `known_procedures` maps procedure_id -> performed start of
    Procedures mapped earlier (FhirMapping.procedures_performed), so a
    standalone Observation or AdverseEvent can be placed.
    """
    return _document.map_document(document, ctx, known_procedures)
