"""Binary encoding of fact batches: on the internal facts topic, and as the
segments of the state changelog.

msgpack via msgspec, decoded straight into the fact structs (typed, so a
malformed batch fails here rather than deep in the domain). A leading format
version lets a later release read what an earlier one wrote. A segment is a
fact batch: when every fact of an inbound batch is new, its bytes are
written to the changelog as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from spinewatch.domain.outcomes.facts import Fact

# 2: procedure facts carry their clinical time (occurred_at) for the drift charts.
FORMAT_VERSION = 2

FactBatch = list[tuple[bytes, Fact]]  # (procedure id as UUID bytes, fact)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[int, FactBatch])


class UnreadableState(ValueError):
    """Bytes that are not a fact batch this release can read."""


def encode_facts(items: Sequence[tuple[bytes, Fact]]) -> bytes:
    return _encoder.encode((FORMAT_VERSION, items))


def decode_facts(raw: bytes) -> FactBatch:
    try:
        version, items = _decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise UnreadableState(str(exc)) from None
    if version != FORMAT_VERSION:
        raise UnreadableState(f"fact batch format {version}, this release reads {FORMAT_VERSION}")
    return items
