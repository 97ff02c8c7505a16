"""The rebuild's recall of sentinel withdrawals decodes only the records that may need it.

`SentinelWatch.recall` runs over every record a rebuilt worker holds; it
used to decode each (~3.7 s CPU at 1,000,000 procedures, issue 20). It now
searches the packed bytes for a retraction and a sentinel category first.
Here random records (procedures, sentinel and other complications, follow-ups,
retractions of any of them, ids that carry the searched bytes) are recalled
both ways and the withdrawals compared, in order; and a partition with a few
sentinel retractions among many records is shown to decode only those.
"""

from __future__ import annotations

import uuid
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from spinewatch.domain.drift import sentinels
from spinewatch.domain.drift.sentinels import (
    SENTINEL_CATEGORIES,
    SentinelCase,
    SentinelWatch,
    SentinelWithdrawal,
    ended,
    sentinel_history,
)
from spinewatch.domain.outcomes import packed
from spinewatch.domain.outcomes.facts import (
    ComplicationFact,
    Fact,
    FollowupFact,
    ProcedureFact,
    RetractionFact,
)
from spinewatch.domain.outcomes.partition import PartitionState, Records, apply_facts, rebuilt

# Ids carrying a retraction's head bytes, and a sentinel category's: false alarms
# for the bytes search, which decoding must then clear.
_DECOYS = [b"\x93\x03" + packed.encoded_text("death") + bytes(8), b"\x00\x93\x03" + bytes(13)]


def _procedure(event_id: bytes, site: str, at: int) -> ProcedureFact:
    return ProcedureFact(event_id, at, at, site, "pvp", "osteoporotic", None, (), False, 8000)


def _reference(records: Records) -> list[SentinelCase | SentinelWithdrawal]:
    """The recall before issue 20: every record decoded."""
    found: list[SentinelCase | SentinelWithdrawal] = []
    for procedure_id, record in records.items():
        if sentinels._has_sentinel_retraction(record):
            found.extend(ended(procedure_id, sentinel_history(record)))
    return found


@st.composite
def _facts(draw: st.DrawFn) -> list[tuple[bytes, Fact]]:
    ids = st.one_of(st.binary(min_size=16, max_size=16), st.sampled_from(_DECOYS))
    items: list[tuple[bytes, Fact]] = []
    for n in range(draw(st.integers(1, 12))):
        procedure_id = uuid.UUID(int=n + 1).bytes
        own: list[bytes] = []
        for _ in range(draw(st.integers(1, 7))):
            event_id = draw(ids)
            kind = draw(st.sampled_from(["procedure", "complication", "followup", "retraction"]))
            fact: Fact
            if kind == "procedure":
                site = draw(st.sampled_from(["north", "south"]))
                fact = _procedure(event_id, site, draw(st.integers(0, 10**12)))
            elif kind == "complication":
                category = draw(st.sampled_from([*SENTINEL_CATEGORIES, "infection"]))
                fact = ComplicationFact(event_id, category, draw(st.booleans()))
            elif kind == "followup":
                fact = FollowupFact(event_id, draw(st.integers(0, 10**12)), "week_1", 3000, None)
            else:
                mine = bool(own) and draw(st.booleans())  # of its own facts, or any id
                target = draw(st.sampled_from(own)) if mine else draw(ids)
                fact = RetractionFact(event_id, target)
            own.append(event_id)
            items.append((procedure_id, fact))
    return draw(st.permutations(items))


@settings(max_examples=300, deadline=None)
@given(_facts(), st.integers(1, 5))
def test_the_recall_equals_decoding_every_record(
    items: list[tuple[bytes, Fact]], batches: int
) -> None:
    live = PartitionState()
    for start in range(batches):  # facts applied in batches, as the worker does
        apply_facts(live, items[start::batches])
    for state in (live, rebuilt([items])):
        watch = SentinelWatch()
        watch.recall(state.records)
        assert watch.found == _reference(state.records)


def test_only_records_that_may_hold_a_sentinel_retraction_are_decoded() -> None:
    items: list[tuple[bytes, Fact]] = []
    for n in range(300):
        procedure_id = uuid.UUID(int=n + 1).bytes
        procedure = uuid.UUID(int=10_000 + n).bytes
        items.append((procedure_id, _procedure(procedure, "north", n)))
        if n % 100 == 1:  # an embolism reported, then retracted
            embolism = uuid.UUID(int=20_000 + n).bytes
            items.append((procedure_id, ComplicationFact(embolism, SENTINEL_CATEGORIES[0], True)))
            items.append((procedure_id, RetractionFact(uuid.UUID(int=30_000 + n).bytes, embolism)))
        elif n % 100 == 2:  # a follow-up retracted: no sentinel to withdraw
            followup = uuid.UUID(int=40_000 + n).bytes
            items.append((procedure_id, FollowupFact(followup, n, "week_1", 3000, None)))
            items.append((procedure_id, RetractionFact(uuid.UUID(int=50_000 + n).bytes, followup)))
        elif n % 100 == 3:  # a death reported, nothing retracted: stays paged
            death = uuid.UUID(int=60_000 + n).bytes
            items.append((procedure_id, ComplicationFact(death, "death", True)))
    state = rebuilt([items])
    decoded: list[bytes] = []
    unpack = packed.unpack

    def counting_unpack(raw: bytes) -> tuple[Fact, ...]:
        decoded.append(raw)
        return unpack(raw)

    watch = SentinelWatch()
    with mock.patch.object(packed, "unpack", counting_unpack):
        watch.recall(state.records)
    assert len(decoded) == 3  # of 300 records: the three with a retracted embolism
    assert [(w.procedure_id, w.reason) for w in watch.found] == [  # type: ignore[union-attr]
        (uuid.UUID(int=n + 1).bytes, "retracted") for n in (1, 101, 201)
    ]
    assert watch.found == _reference(state.records)
