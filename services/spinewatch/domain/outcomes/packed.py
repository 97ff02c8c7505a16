"""Procedure records held as bytes: one small bytes object per procedure.

A record held as a tuple of fact structs cost about 2.7 KB per procedure
(benchmarks/state_memory.py: every fact decoded into its own strings, each
procedure fact with its own copy of ~10 tally names). Held as one msgpack
array it costs its encoding, and the part of a procedure fact that many
procedures share (site, procedure type, indication, operator, intrinsic
tallies, symptomatic leak: its "profile") is stored once per worker and
referred to by number. A record is decoded when it is touched.

The encoding is exact: `unpack(pack(facts)) == facts`, fact for fact and in
order, so every function of a record reads the same facts it read before.

Profile numbers are this process's: `Profiles` keeps the list, and a
snapshot of the state carries it along (see `Profiles.remap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from spinewatch.domain.outcomes.facts import (
    ComplicationFact,
    Fact,
    FollowupFact,
    ProcedureFact,
    RetractionFact,
)

# (site_id, procedure_type, indication, operator_ref, intrinsic, symptomatic_leak)
Profile = tuple[str, str, str, str | None, tuple[tuple[str, int], ...], bool]


class PackedProcedure(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=4):
    """A procedure fact with its profile by number."""

    event_id: bytes
    recorded_at_us: int
    occurred_at_us: int
    profile: int
    pre_vas: int | None


Stored = PackedProcedure | FollowupFact | ComplicationFact | RetractionFact


class Profiles:
    """The distinct profiles seen by this process, numbered in order of arrival.

    Grows with the variety of the data (sites x operators x intrinsic
    tallies), not with the number of procedures.
    """

    __slots__ = ("by_number", "numbers")

    def __init__(self) -> None:
        self.by_number: list[Profile] = []
        self.numbers: dict[Profile, int] = {}

    def number(self, fact: ProcedureFact) -> int:
        profile = (
            fact.site_id,
            fact.procedure_type,
            fact.indication,
            fact.operator_ref,
            fact.intrinsic,
            fact.symptomatic_leak,
        )
        number = self.numbers.get(profile)
        if number is None:
            number = self.numbers[profile] = len(self.by_number)
            self.by_number.append(profile)
        return number

    def remap(self, others: Sequence[Profile]) -> list[int]:
        """This process's numbers for another's profiles (adding those it lacks)."""
        mapped = []
        for profile in others:
            number = self.numbers.get(profile)
            if number is None:
                number = self.numbers[profile] = len(self.by_number)
                self.by_number.append(profile)
            mapped.append(number)
        return mapped


PROFILES = Profiles()  # one per process: shared by every partition's records

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Stored])
_FIXARRAY, _ARRAY16, _ARRAY32 = 0x90, 0xDC, 0xDD
EMPTY = bytes([_FIXARRAY])  # a record with no facts


def _stored(fact: Fact) -> Stored:
    if type(fact) is ProcedureFact:
        return PackedProcedure(
            fact.event_id,
            fact.recorded_at_us,
            fact.occurred_at_us,
            PROFILES.number(fact),
            fact.pre_vas,
        )
    return fact  # type: ignore[return-value]


def pack(facts: Iterable[Fact]) -> bytes:
    return _encoder.encode([_stored(fact) for fact in facts])


def unpack(packed: bytes) -> tuple[Fact, ...]:
    stored = _decoder.decode(packed)
    profiles = PROFILES.by_number
    for i, item in enumerate(stored):
        if type(item) is PackedProcedure:
            site, kind, indication, operator, intrinsic, symptomatic = profiles[item.profile]
            stored[i] = ProcedureFact(  # type: ignore[call-overload]
                item.event_id,
                item.recorded_at_us,
                item.occurred_at_us,
                site,
                kind,
                indication,
                operator,
                intrinsic,
                symptomatic,
                item.pre_vas,
            )
    return tuple(stored)  # type: ignore[arg-type]


def appended(packed: bytes, fact: Fact) -> bytes:
    """The record with `fact` added last, without decoding the facts it holds.

    A record is a msgpack array: its header holds the count, the facts follow.
    """
    head = packed[0]
    if head & 0xF0 == _FIXARRAY:
        count, body = head & 0x0F, packed[1:]
    elif head == _ARRAY16:
        count, body = int.from_bytes(packed[1:3]), packed[3:]
    else:  # _ARRAY32: a record of 65,536 facts or more
        count, body = int.from_bytes(packed[1:5]), packed[5:]
    count += 1
    if count < 16:
        header = bytes((_FIXARRAY | count,))
    elif count < 1 << 16:
        header = bytes((_ARRAY16,)) + count.to_bytes(2)
    else:
        header = bytes((_ARRAY32,)) + count.to_bytes(4)
    return header + body + _encoder.encode(_stored(fact))


def holds(packed: bytes, event_id: bytes) -> bool:
    """Whether the record holds the fact with this id.

    Every fact's id is in the encoding as its 16 bytes, so their absence is
    proof (the usual case, no decoding); presence is checked by decoding,
    since the bytes could straddle other fields.
    """
    if event_id not in packed:
        return False
    return any(fact.event_id == event_id for fact in _decoder.decode(packed))


# Every retraction's encoding starts with these two bytes (its array header
# and tag, whatever its ids), and a string's encoding is its header and
# bytes: a record without them holds no retraction (or no such string), so a
# pass looking for retractions decodes only the records that may hold one.
_RETRACTION_HEAD = _encoder.encode(RetractionFact(bytes(16), bytes(16)))[:2]


def may_hold_retraction(packed: bytes) -> bool:
    """False when the record holds no retraction: a bytes search, no decoding.

    True may be a false alarm (the bytes inside an id): decode to be sure.
    """
    return _RETRACTION_HEAD in packed


def encoded_text(text: str) -> bytes:
    """A string as every record encodes it: search a packed record for it."""
    return _encoder.encode(text)


def renumbered(packed: bytes, numbers: Sequence[int]) -> bytes:
    """The record with each profile number `n` replaced by `numbers[n]`."""
    stored = _decoder.decode(packed)
    for i, item in enumerate(stored):
        if type(item) is PackedProcedure:
            stored[i] = msgspec.structs.replace(item, profile=numbers[item.profile])
    return _encoder.encode(stored)
