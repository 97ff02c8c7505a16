"""FHIR R4 -> spinewatch events (spinewatch.fhir): pure mapping, no servers.

The example transaction Bundle (schemas/examples/fhir/bundle.json) maps to
known events; every unmappable case is a reject with a reason while the
other entries still map; ids are keyed and deterministic; and the FHIR
subject never leaves the mapping (tests/test_fhir_privacy.py goes further).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fhir.resources.R4B.bundle import Bundle

from spinewatch.contracts import (
    ComplicationReported,
    EventRetracted,
    FollowupRecorded,
    ProcedurePerformed,
    parse_event,
)
from spinewatch.fhir import FhirContext, FhirMapping, codes, map_fhir, referenced_procedures
from spinewatch.fhir.codes import TIMEPOINT_WINDOWS, Ext, timepoint_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "fhir" / "bundle.json"
KEY = bytes(range(32))
CTX = FhirContext(
    source="ris-north.v3",
    site_id="north",
    pseudonym_key=KEY,
    received_at=datetime(2025, 11, 1, 12, 0, tzinfo=UTC),
)
SW = "urn:spinewatch:fhir:codesystem:"
PVP_PAIN = ("pain-pvp-1-d1", "pain-pvp-1-m1", "pain-pvp-1-m3")

Doc = dict[str, Any]
E = TypeVar("E", ProcedurePerformed, FollowupRecorded, ComplicationReported, EventRetracted)


def example() -> Doc:
    document: Doc = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return document


def entry(document: Doc, rid: str) -> Doc:
    """The resource with this id (a mutable part of `document`)."""
    found: Doc = next(e["resource"] for e in document["entry"] if e["resource"].get("id") == rid)
    return found


def position(document: Doc, rid: str) -> int:
    return next(i for i, e in enumerate(document["entry"]) if e["resource"].get("id") == rid)


def of_type(mapping: FhirMapping, kind: type[E]) -> list[E]:
    return [e for e in mapping.events if isinstance(e, kind)]


def reject_codes(mapping: FhirMapping) -> dict[str, set[str]]:
    return {r.entry: {e.code for e in r.errors} for r in mapping.rejects}


def test_the_example_bundle_maps_to_its_clinical_content() -> None:
    mapping = map_fhir(example(), CTX)

    assert mapping.rejects == ()
    kinds = Counter(type(e).__name__ for e in mapping.events)
    assert kinds == {"ProcedurePerformed": 2, "FollowupRecorded": 5, "ComplicationReported": 1}
    # Procedures first: the follow-ups' procedure exists when they arrive.
    assert [type(e) for e in mapping.events[:2]] == [ProcedurePerformed] * 2

    pvp, pkp = of_type(mapping, ProcedurePerformed)
    assert (pvp.procedure_type, pvp.indication, pvp.anesthesia) == ("pvp", "osteoporotic", "local")
    assert [(lv.vertebra, lv.approach, lv.cement_volume_ml) for lv in pvp.levels] == [
        ("L1", "bipedicular", 3.5),
        ("L2", "unipedicular", 2.8),
    ]
    leak = pvp.levels[1].leakages[0]
    assert (leak.site, leak.volume_ml, leak.symptomatic) == ("paravertebral", 0.3, False)
    assert (pvp.pre_vas, pvp.duration_min, pvp.operator_ref) == (8, 45, "op-7f3k2")
    assert (pvp.neurological_deficit_at_presentation, pvp.biopsy_taken) == (False, False)
    assert (pkp.procedure_type, pkp.indication, pkp.histology) == (
        "pkp",
        "metastasis",
        "metastatic_carcinoma",
    )
    assert [lv.vertebra for lv in pkp.levels] == ["T12"]
    assert (pkp.posterior_wall_intact, pkp.operator_ref, pkp.duration_min) == (True, None, None)

    followups = {
        (f.procedure_id, f.timepoint, f.days_since_procedure, f.vas)
        for f in of_type(mapping, FollowupRecorded)
    }
    assert followups == {
        (pvp.procedure_id, "post_procedure", 1, 3.0),
        (pvp.procedure_id, "month_1", 30, 2.0),
        (pvp.procedure_id, "month_3", 95, 1.0),
        (pkp.procedure_id, "post_procedure", 1, 4.0),
        (pkp.procedure_id, "month_6", 191, 2.0),
    }
    [complication] = of_type(mapping, ComplicationReported)
    assert complication.procedure_id == pkp.procedure_id
    assert complication.patient_ref == pkp.patient_ref != pvp.patient_ref
    assert (complication.category, complication.severity, complication.relatedness) == (
        "new_vertebral_fracture",
        "moderate",
        "possible",
    )
    assert (complication.days_after_procedure, complication.vertebra) == (40, "T11")
    assert all(f.patient_ref == pvp.patient_ref for f in of_type(mapping, FollowupRecorded)[:3])
    assert mapping.procedures_performed == {
        pvp.procedure_id: datetime(2025, 3, 10, 8, 30, tzinfo=UTC),
        pkp.procedure_id: datetime(2025, 4, 2, 12, 0, tzinfo=UTC),
    }


def test_the_example_is_a_structurally_valid_fhir_bundle() -> None:
    # R4B is the closest release the library models; the elements used are R4's too.
    bundle = Bundle.model_validate(example())
    assert bundle.type == "transaction"
    assert len(bundle.entry or []) == 11


def test_every_mapped_event_parses_from_its_own_json_like_a_native_one() -> None:
    for event in map_fhir(example(), CTX).events:
        assert parse_event(event.model_dump_json()) == event


def test_ids_are_deterministic_keyed_and_namespaced_by_source() -> None:
    first, again = map_fhir(example(), CTX), map_fhir(example(), CTX)
    assert first.events == again.events  # a resend is recognised as duplicates

    ids = {e.event_id for e in first.events}
    assert len(ids) == len(first.events)
    other_key = FhirContext(CTX.source, CTX.site_id, bytes(32), CTX.received_at)
    other_source = FhirContext("ris-south.v1", CTX.site_id, KEY, CTX.received_at)
    for ctx in (other_key, other_source):
        events = map_fhir(example(), ctx).events
        assert ids.isdisjoint(e.event_id for e in events)
        assert {e.patient_ref for e in first.events}.isdisjoint(e.patient_ref for e in events)


def test_a_changed_resource_keeps_its_event_id_with_other_content() -> None:
    document = example()
    entry(document, "pain-pvp-1-d1")["valueInteger"] = 5
    before = {e.event_id: e for e in map_fhir(example(), CTX).events}
    after = {e.event_id: e for e in map_fhir(document, CTX).events}
    assert before.keys() == after.keys()
    changed = [i for i in before if before[i] != after[i]]
    assert len(changed) == 1
    assert isinstance(after[changed[0]], FollowupRecorded)
    assert after[changed[0]].vas == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("rid", ["pvp-20250310-1", "pain-pvp-1-m1"])
def test_entered_in_error_retracts_the_event_the_resource_mapped_to(rid: str) -> None:
    originals = {e.event_id for e in map_fhir(example(), CTX).events}
    document = example()
    entry(document, rid)["status"] = "entered-in-error"
    mapping = map_fhir(document, CTX)

    [retraction] = of_type(mapping, EventRetracted)
    assert retraction.reason == "entered_in_error"
    assert retraction.target_event_id in originals
    assert retraction.target_event_id not in {e.event_id for e in mapping.events}
    original = next(
        e for e in map_fhir(example(), CTX).events if e.event_id == retraction.target_event_id
    )
    assert (retraction.procedure_id, retraction.patient_ref) == (
        original.procedure_id,
        original.patient_ref,
    )


def test_a_standalone_observation_is_placed_by_the_procedures_the_gateway_knows() -> None:
    document = example()
    bundle = map_fhir(document, CTX)
    observation = entry(document, "pain-pvp-1-d1")
    observation["subject"] = {
        "reference": "Patient?identifier=https://hospital-north.example/fhir/sid/mrn|100234"
    }

    wanted = referenced_procedures(observation, CTX)
    pvp = of_type(bundle, ProcedurePerformed)[0]
    assert wanted == {pvp.procedure_id}
    assert referenced_procedures(document, CTX) == frozenset()  # all inside

    alone = map_fhir(observation, CTX, bundle.procedures_performed)
    assert alone.rejects == ()
    [followup] = alone.events
    assert followup in bundle.events  # the same event as from the Bundle

    unknown = map_fhir(observation, CTX)
    assert reject_codes(unknown) == {"resource (Observation)": {"unknown_procedure"}}


def _without_anesthesia(resource: Doc) -> None:
    resource["extension"] = [x for x in resource["extension"] if x["url"] != Ext.ANESTHESIA]


# case -> (resource id, how to break it, the error code expected)
BREAKS: dict[str, tuple[str, Callable[[Doc], object], str]] = {
    "unknown procedure code": (
        "pvp-20250310-1",
        lambda r: r["code"]["coding"][0].update(code="99999"),
        "unmapped_code",
    ),
    "status not completed": (
        "pvp-20250310-1",
        lambda r: r.update(status="in-progress"),
        "status_not_completed",
    ),
    "missing required extension": ("pvp-20250310-1", _without_anesthesia, "missing_extension"),
    "unknown body site": (  # 123037004 is "body structure", any
        "pvp-20250310-1",
        lambda r: r["bodySite"][0]["coding"][0].update(code="123037004"),
        "unmapped_code",
    ),
    "complication on the Procedure": (
        "pvp-20250310-1",
        lambda r: r.update(complication=[{"text": "leak"}]),
        "complication_not_mapped",
    ),
    "observation of an unknown procedure": (
        "pain-pkp-1-m6",
        lambda r: r.update(partOf=[{"reference": "Procedure/never-sent"}]),
        "unknown_procedure",
    ),
    "wrong LOINC code": (  # 8867-4 is heart rate
        "pain-pkp-1-m6",
        lambda r: r["code"]["coding"][0].update(code="8867-4"),
        "wrong_observation_code",
    ),
    "observation before the procedure": (
        "pain-pkp-1-m6",
        lambda r: r.update(effectiveDateTime="2025-04-01T09:00:00+02:00"),
        "before_procedure",
    ),
}


@pytest.mark.parametrize("case", BREAKS)
def test_an_unmappable_entry_is_rejected_with_a_reason_and_the_rest_still_maps(case: str) -> None:
    rid, breaking, code = BREAKS[case]
    document = example()
    breaking(entry(document, rid))
    kind = entry(document, rid)["resourceType"]
    label = f"entry[{position(document, rid)}] ({kind})"
    mapping = map_fhir(document, CTX)

    rejects = reject_codes(mapping)
    assert code in rejects.pop(label)
    assert all(e.message for r in mapping.rejects for e in r.errors)
    if kind == "Procedure":
        # Its three follow-ups cannot be placed without it; nothing else is lost.
        followups = [f"entry[{position(document, rid)}] (Observation)" for rid in PVP_PAIN]
        assert rejects == {f: {"procedure_rejected"} for f in followups}
        assert len(mapping.events) == 8 - 4
    else:
        assert rejects == {}
        assert len(mapping.events) == 8 - 1


def test_a_missing_level_extension_names_the_extension_expected() -> None:
    document = example()
    entry(document, "pvp-20250310-1")["bodySite"][0]["extension"].pop(0)  # approach
    [reject, *_] = map_fhir(document, CTX).rejects
    assert [(e.location, e.code) for e in reject.errors] == [
        ("Procedure.bodySite[0].extension", "missing_extension")
    ]
    assert Ext.APPROACH.value in reject.errors[0].message


@pytest.mark.parametrize(
    "document",
    [
        [],
        "Bundle",
        7,
        None,
        {},
        {"resourceType": 5},
        {"resourceType": "Bundle", "type": "searchset"},
    ],
)
def test_a_document_that_is_not_fhir_we_take_is_one_reject(document: Any) -> None:
    mapping = map_fhir(document, CTX)
    assert mapping.events == ()
    [reject] = mapping.rejects
    assert reject.entry == "document"
    assert referenced_procedures(document, CTX) == frozenset()


def test_resource_types_are_mapped_ignored_or_rejected_by_kind() -> None:
    document = example()
    document["entry"].append({"resource": {"resourceType": "Practitioner", "id": "dr-1"}})
    document["entry"].append({"resource": {"resourceType": "MedicationRequest", "id": "m-1"}})
    document["entry"].append({"request": {"method": "DELETE", "url": "Observation/pain-pkp-1-m6"}})
    mapping = map_fhir(document, CTX)
    assert len(mapping.events) == 8
    assert reject_codes(mapping) == {
        "entry[12] (unsupported resource type)": {"unsupported_resource"},
        "entry[13] (unsupported resource type)": {"unsupported_method"},
    }
    alone = map_fhir({"resourceType": "Patient", "id": "p"}, CTX)
    assert reject_codes(alone) == {"resource (Patient)": {"unsupported_resource"}}


def test_a_fatal_outcome_makes_the_complication_a_death() -> None:
    document = example()
    event = entry(document, "ae-pkp-1-fracture")
    event["outcome"] = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                "code": "fatal",
            }
        ]
    }
    [complication] = of_type(map_fhir(document, CTX), ComplicationReported)
    assert (complication.category, complication.severity) == ("death", "fatal")


def test_the_same_identity_twice_with_other_content_is_a_conflict() -> None:
    document = example()
    twin = copy.deepcopy(document["entry"][position(document, "pain-pkp-1-m6")])
    document["entry"].append(copy.deepcopy(twin))  # same content: one event
    twin["resource"]["valueInteger"] = 9
    document["entry"].append(twin)
    mapping = map_fhir(document, CTX)
    assert len(mapping.events) == 8
    assert reject_codes(mapping) == {"entry[12] (Observation)": {"conflicting_duplicate"}}


@pytest.mark.parametrize(("first", "last", "timepoint"), TIMEPOINT_WINDOWS)
def test_timepoint_windows_are_contiguous_and_closed(first: int, last: int, timepoint: str) -> None:
    assert timepoint_for(first) == timepoint_for(last) == timepoint
    assert timepoint_for(first - 1) != timepoint
    assert timepoint_for(last + 1) != timepoint


def test_same_day_and_beyond_a_year_are_other() -> None:
    assert timepoint_for(0) == timepoint_for(546) == timepoint_for(36500) == "other"


def test_the_context_keeps_its_key_out_of_repr_and_refuses_a_short_one() -> None:
    assert KEY.hex() not in repr(CTX)
    assert str(KEY) not in repr(CTX)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        FhirContext("ris-north.v3", "north", b"short", CTX.received_at)
    with pytest.raises(ValueError, match="timezone"):
        FhirContext("ris-north.v3", "north", KEY, datetime(2025, 1, 1))


def test_urn_references_and_spinewatch_codes_work_in_a_collection_bundle() -> None:
    """Entries without ids, linked by urn:uuid fullUrls; explicit spinewatch codes."""
    document = example()
    proc = copy.deepcopy(document["entry"][position(document, "pvp-20250310-1")])
    pain = copy.deepcopy(document["entry"][position(document, "pain-pvp-1-d1")])
    for item, urn in ((proc, "urn:uuid:4a0c"), (pain, "urn:uuid:4a0d")):
        del item["resource"]["id"], item["request"]
        item["fullUrl"] = urn
    proc["resource"]["code"] = {"coding": [{"system": SW + "procedure-type", "code": "pvp"}]}
    proc["resource"]["reasonCode"].append(
        {"coding": [{"system": SW + "indication", "code": "other"}]}
    )
    pain["resource"]["partOf"] = [{"reference": "urn:uuid:4a0c"}]
    pain["resource"]["subject"] = {"identifier": {"system": "https://h.example/mrn", "value": "1"}}
    proc["resource"]["subject"] = {"reference": "Patient?identifier=https://h.example/mrn|1"}
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [pain, proc]}

    mapping = map_fhir(collection, CTX)
    assert mapping.rejects == ()
    procedure, followup = mapping.events  # the procedure first, whatever the entry order
    assert isinstance(procedure, ProcedurePerformed)
    assert isinstance(followup, FollowupRecorded)
    assert (procedure.indication, followup.procedure_id) == ("other", procedure.procedure_id)
    assert followup.patient_ref == procedure.patient_ref  # identifier == conditional reference
    assert referenced_procedures(collection, CTX) == frozenset()


def test_the_mapping_document_lists_every_code_and_extension_the_code_maps() -> None:
    text = (ROOT / "schemas" / "fhir" / "README.md").read_text(encoding="utf-8")
    documented = [
        *codes.CPT_PROCEDURES,
        *codes.SNOMED_VERTEBRAE,
        *(name.removeprefix(f"{codes.SPINEWATCH}:extension:") for name in Ext),
        codes.PAIN_SEVERITY_NRS,
        codes.LIFE_THREATENING,
        codes.RESULTS_IN_DEATH,
        *(f"{low}-{high}" for low, high, _ in TIMEPOINT_WINDOWS),
    ]
    missing = [code for code in documented if f"{code}" not in text]
    assert missing == []
    assert "urn:spinewatch:fhir:extension:" in text
