"""Event contracts of spinewatch: what hospital systems send.

Public surface: the event models, `Event` (their discriminated union),
`parse_event` and the vocabularies. Everything else is internal.
"""

from spinewatch.contracts.base import Sf36Scores
from spinewatch.contracts.complication import ComplicationReported
from spinewatch.contracts.envelope import SCHEMA_VERSION, EventEnvelope
from spinewatch.contracts.followup import FollowupRecorded
from spinewatch.contracts.procedure import CementLeakage, ProcedurePerformed, TreatedLevel
from spinewatch.contracts.registry import EVENT_MODELS, Event, parse_event
from spinewatch.contracts.retraction import EventRetracted
from spinewatch.contracts.vocabulary import (
    AnalgesicUse,
    Anesthesia,
    Approach,
    ComplicationCategory,
    FollowupTimepoint,
    Histology,
    Indication,
    LeakageImaging,
    LeakageSite,
    NeurologicalStatus,
    PainRelief,
    ProcedureType,
    Relatedness,
    RetractionReason,
    Severity,
    Vertebra,
)

__all__ = [
    "EVENT_MODELS",
    "SCHEMA_VERSION",
    "AnalgesicUse",
    "Anesthesia",
    "Approach",
    "CementLeakage",
    "ComplicationCategory",
    "ComplicationReported",
    "Event",
    "EventEnvelope",
    "EventRetracted",
    "FollowupRecorded",
    "FollowupTimepoint",
    "Histology",
    "Indication",
    "LeakageImaging",
    "LeakageSite",
    "NeurologicalStatus",
    "PainRelief",
    "ProcedurePerformed",
    "ProcedureType",
    "Relatedness",
    "RetractionReason",
    "Severity",
    "Sf36Scores",
    "TreatedLevel",
    "Vertebra",
    "parse_event",
]
