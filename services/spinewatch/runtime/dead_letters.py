"""Dead letters that always fit the broker, and say what they stand for.

A dead letter is the rejected payload with headers that explain it:

| header                          | value                                                   |
| ------------------------------- | ------------------------------------------------------- |
| `spinewatch-reason`             | a `RejectReason` (bounded)                              |
| `spinewatch-errors`             | JSON list of {field, code, message}, at most 20; never a value |
| `spinewatch-errors-total`       | how many errors there were in all                       |
| `spinewatch-source-topic`, `-partition`, `-offset` | where the original message sits      |
| `spinewatch-bulk-index`         | the item's position, for one item of a bulk message     |
| `spinewatch-original-bytes`     | the payload's size                                      |
| `spinewatch-original-sha256`    | its SHA-256 (hex), to find or compare the original      |
| `spinewatch-truncated`          | `true` when the value holds only the payload's head     |

A payload larger than `max_value_bytes` keeps only its head: a dead letter
of a 1 MB message once exceeded the producer's request limit, the write
failed, and ingest stopped for good. The original stays in the source topic
at the recorded offset (for as long as its retention keeps it), and the
hash proves which bytes it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from spinewatch.errors import FieldError

# Well under the producer's default request limit (1,000,000 bytes) with
# room for the headers; a broker or producer that refuses even that gets
# a further shrunk letter (`shrunk`).
DEFAULT_MAX_VALUE_BYTES = 512 << 10
MAX_ERRORS = 20
MAX_ERROR_MESSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class MessageOrigin:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected payload with the reason, for the dead-letter topic."""

    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(
    raw: bytes,
    errors: Sequence[FieldError],
    reason: str,
    origin: MessageOrigin,
    *,
    index: int | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> DeadLetter:
    listed = [
        {"field": e.location, "code": e.code, "message": e.message[:MAX_ERROR_MESSAGE_CHARS]}
        for e in errors[:MAX_ERRORS]
    ]
    headers: list[tuple[str, bytes]] = [
        ("spinewatch-reason", reason.encode()),
        ("spinewatch-errors", json.dumps(listed).encode()),
        ("spinewatch-errors-total", str(len(errors)).encode()),
        ("spinewatch-source-topic", origin.topic.encode()),
        ("spinewatch-source-partition", str(origin.partition).encode()),
        ("spinewatch-source-offset", str(origin.offset).encode()),
    ]
    if index is not None:
        headers.append(("spinewatch-bulk-index", str(index).encode()))
    headers += [
        ("spinewatch-original-bytes", str(len(raw)).encode()),
        ("spinewatch-original-sha256", hashlib.sha256(raw).hexdigest().encode()),
        ("spinewatch-truncated", b"true" if len(raw) > max_value_bytes else b"false"),
    ]
    return DeadLetter(raw[:max_value_bytes], headers)


def shrunk(letter: DeadLetter, max_value_bytes: int) -> DeadLetter:
    """The same letter with a shorter head, for a broker that refused its size.

    The size and hash headers already describe the original, so only the
    value and the truncation flag change.
    """
    if len(letter.value) <= max_value_bytes:
        return letter
    headers = [
        (name, b"true" if name == "spinewatch-truncated" else value)
        for name, value in letter.headers
    ]
    return DeadLetter(letter.value[:max_value_bytes], headers)
