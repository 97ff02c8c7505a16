"""Binary encodings of engine state: shards in the changelog, fact batches
on the internal topic.

msgpack via msgspec: compact, and an order of magnitude faster than JSON of
pydantic models, which matters because a shard is re-encoded every time a
batch touches it. A leading format version lets a later release read what
an earlier one wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from faust.serializers import codecs

from spinewatch.domain.facts import Fact, fact_from_row, fact_to_row
from spinewatch.domain.records import ProcedureRecord
from spinewatch.domain.shards import ShardState

FORMAT_VERSION = 1
SHARD_CODEC = "spinewatch-shard"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class UnreadableState(ValueError):
    """Bytes that are not a shard or fact batch this release can read."""


def encode_shard(state: ShardState) -> bytes:
    records = [
        [procedure_id, [fact_to_row(fact) for fact in record.facts]]
        for procedure_id, record in state.records.items()
    ]
    return _encoder.encode([FORMAT_VERSION, state.partition, records])


def decode_shard(raw: bytes) -> ShardState:
    version, partition, records = _checked(raw)
    del version
    return ShardState(
        partition=partition,
        records={
            procedure_id: ProcedureRecord(tuple(fact_from_row(row) for row in rows))
            for procedure_id, rows in records
        },
    )


def encode_facts(items: Iterable[tuple[str, Fact]]) -> bytes:
    return _encoder.encode(
        [FORMAT_VERSION, [[procedure_id, fact_to_row(fact)] for procedure_id, fact in items]]
    )


def decode_facts(raw: bytes) -> list[tuple[str, Fact]]:
    _version, items = _checked(raw, fields=2)
    return [(procedure_id, fact_from_row(row)) for procedure_id, row in items]


def _checked(raw: bytes, fields: int = 3) -> list[Any]:
    try:
        decoded = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise UnreadableState(str(exc)) from None
    if not isinstance(decoded, list) or len(decoded) != fields or decoded[0] != FORMAT_VERSION:
        raise UnreadableState("unknown state format")
    return decoded


class ShardCodec(codecs.Codec):
    """faust codec for the shard table's changelog values."""

    def _dumps(self, obj: Any) -> bytes:
        return encode_shard(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_shard(s)


def register_codecs() -> None:
    codecs.register(SHARD_CODEC, ShardCodec())
