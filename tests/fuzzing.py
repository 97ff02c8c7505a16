"""Mutated inbound messages, each with the number of events it stands for.

A seeded generator (not Hypothesis: the messages go through a running
worker, and a run must be repeatable from its seed) turns valid synthetic
events into hostile ones: deep nesting, oversized payloads, unicode of every
kind, extreme numbers, swapped types, truncation, flipped bytes, dropped and
extra fields, and bulk arrays of mutated items.

Every message carries `units`: how many events the worker must account for,
known from how the message was built, not from spinewatch's own code. A
bulk array built from k JSON items stands for k events (each counts or is
dead-lettered on its own); anything else, an empty array or a bracket
nesting of a single item included, stands for one. So after a run,
accepted + dead-lettered must equal the sum of `units`, exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from spinewatch.demo.synthetic.cohort import default_sites, encode, generate_cohort

Json = Any


@dataclass(frozen=True, slots=True)
class Fuzzed:
    value: bytes
    units: int
    kind: str


def valid_events(seed: int, procedures: int = 400) -> list[dict[str, Any]]:
    cohort = generate_cohort(seed, default_sites(procedures), malformed=0)
    return list(cohort.events)


def fuzzed_messages(seed: int, count: int, *, huge_every: int = 500) -> Iterator[Fuzzed]:
    """`count` messages; one in `huge_every` is over a megabyte."""
    rng = random.Random(seed)
    events = valid_events(seed)
    for n in range(count):
        event = rng.choice(events)
        if n % huge_every == huge_every - 1:
            yield _huge(rng, event)
            continue
        kind, mutate = rng.choice(_MUTATIONS)
        yield _named(mutate(rng, event, events), kind)


def _named(fuzzed: Fuzzed, kind: str) -> Fuzzed:
    return Fuzzed(fuzzed.value, fuzzed.units, kind)


def _one(value: bytes) -> Fuzzed:
    # Never a top-level array by accident: that would count its items.
    assert value.lstrip()[:1] != b"[", value[:40]
    return Fuzzed(value, 1, "")


def _valid(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    return _one(encode(event))


def _deep(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    depth = rng.choice([2, 31, 33, 200, 1500, 5000])
    if rng.random() < 0.5:
        closed = rng.random() < 0.8
        value = b"[" * depth + encode(event) + (b"]" * depth if closed else b"")
        return Fuzzed(value, 1, "")  # one item at every level: one event's worth
    key = json.dumps(rng.choice(["a", "levels", "event_type"])).encode()
    return _one(b"{" + (key + b":{") * depth + b"}" * (depth + 1))


def _huge(rng: random.Random, event: dict[str, Any]) -> Fuzzed:
    size = rng.choice([600_000, 1_100_000, 2_500_000])
    field = rng.choice(["pre_vas", "source", "junk", "site_id"])
    return Fuzzed(json.dumps(event | {field: "x" * size}).encode(), 1, "huge")


_ODD_TEXT = [
    "\u0000", "\ud800", "\udfff", "\U0001f9b4", "\u202e", "\u200b", "\u00e9", "\U0001d501", "\ufeff",
    "\\", '"', "\n", "{", "[", "\u00a0" * 50, "a" * 5000,
]  # fmt: skip


def _unicode(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    mutated = dict(event)
    key = rng.choice(sorted(mutated))
    mutated[key] = rng.choice(_ODD_TEXT) + str(mutated[key]) + rng.choice(_ODD_TEXT)
    text = json.dumps(mutated, ensure_ascii=rng.random() < 0.5)
    raw = text.encode("utf-8", errors="surrogatepass")
    if rng.random() < 0.2:  # not UTF-8 at all
        cut = rng.randrange(1, len(raw))
        raw = raw[:cut] + bytes([rng.choice([0x80, 0xC0, 0xFF, 0xED])]) + raw[cut:]
    return _one(raw)


_ODD_NUMBERS = [
    "1e999", "-1e999", "NaN", "Infinity", "-0", "0.0000000000000000001", "1" * 400,
    "-9223372036854775809", "18446744073709551616", "1.7976931348623157e309", "0x10", "+1",
    "1.", ".5", "01",
]  # fmt: skip


def _numbers(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    key = rng.choice(sorted(event))
    marker = "__NUMBER__"
    text = json.dumps(event | {key: marker}).replace(f'"{marker}"', rng.choice(_ODD_NUMBERS))
    return _one(text.encode())


_ODD_VALUES: list[Json] = [None, True, 0, -1, 3.5, "", "7", [], {}, [1, 2], {"a": 1}, "null"]


def _types(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    mutated = dict(event)
    for _ in range(rng.randint(1, 3)):
        mutated[rng.choice(sorted(mutated))] = rng.choice(_ODD_VALUES)
    return _one(json.dumps(mutated).encode())


def _fields(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    mutated = dict(event)
    choice = rng.random()
    if choice < 0.4:
        mutated.pop(rng.choice(sorted(mutated)))
    elif choice < 0.7:
        mutated[rng.choice(["patient_name", "mrn", "x" * 300, "", "Jane Doe"])] = "1961-03-02"
    else:  # a duplicate key: the last one wins, or the parser objects
        text = json.dumps(mutated)
        return _one(text[:-1].encode() + b', "event_type": "event.retracted"}')
    return _one(json.dumps(mutated).encode())


def _truncated(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    raw = encode(event)
    return _one(raw[: rng.randrange(1, len(raw))])


def _flipped(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    raw = bytearray(encode(event))
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(1, len(raw))  # never the opening brace
        raw[at] = rng.randrange(256)
    return _one(bytes(raw))


def _garbage(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if raw.lstrip()[:1] == b"[":
        raw = b"x" + raw
    return _one(raw)


def _not_an_object(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    return _one(rng.choice([b"42", b'"text"', b"null", b"true", b"{}", b"", b" ", b"{"]))


_SHALLOW: list[Callable[[random.Random, dict[str, Any], list[Any]], Fuzzed]] = [
    _valid, _valid, _unicode, _types, _fields,
]  # fmt: skip


def _bulk(rng: random.Random, event: dict[str, Any], events: list[Any]) -> Fuzzed:
    count = rng.choice([0, 1, 2, 5, 20])
    if count == 0:
        return Fuzzed(b"[]", 1, "")  # no events: dead-lettered whole
    items: list[Json] = []
    for _ in range(count):
        kind = rng.choice(["event", "mutated", "scalar"])
        if kind == "event":
            items.append(rng.choice(events))
        elif kind == "mutated":
            mutated = rng.choice(_SHALLOW[2:])(rng, rng.choice(events), events)
            items.append(_strict(mutated.value))
        else:
            items.append(rng.choice(_ODD_VALUES))
    return Fuzzed(json.dumps(items).encode(), count, "")


def _strict(value: bytes) -> Json:
    """The item as strict JSON, or a stand-in: a lone surrogate, legal to Python's
    json, makes the whole array undecodable for msgspec, and then the message,
    not its items, is what is dead-lettered."""
    try:
        item = json.loads(value)
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except ValueError:  # not JSON, or not encodable as UTF-8
        return "not json once"
    return item


_MUTATIONS: list[tuple[str, Callable[[random.Random, dict[str, Any], list[Any]], Fuzzed]]] = [
    ("valid", _valid),
    ("deep", _deep),
    ("unicode", _unicode),
    ("numbers", _numbers),
    ("types", _types),
    ("fields", _fields),
    ("truncated", _truncated),
    ("flipped", _flipped),
    ("garbage", _garbage),
    ("not_an_object", _not_an_object),
    ("bulk", _bulk),
]
