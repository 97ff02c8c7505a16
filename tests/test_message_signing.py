"""Signatures on the internal topics: what verifies, what does not, and rotation.

The end-to-end proofs (a forged fact batch changes no count, a forged drift
message pages nobody) are in tests/test_poison_e2e.py and
tests/test_alerting_e2e.py; here, the rule itself.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from spinewatch.adapters.message_signing import (
    MIN_KEY_BYTES,
    SIGNATURE_HEADER,
    Keyring,
    SignedTopic,
    TopicKind,
    key_id,
)
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.engine.settings import Settings
from spinewatch.runtime.failures import RejectReason
from tests.support import scaled

OLD = b"the-key-before-the-rotation-0123456789"
NEW = b"the-key-after-the-rotation-9876543210"
KEY, VALUE = b"riverside", b'{"event_type": "drift.signalled"}'


def test_a_signed_record_verifies_and_any_change_to_it_does_not() -> None:
    ring = Keyring(NEW)
    header = ring.sign(TopicKind.DRIFT, KEY, VALUE)
    assert header[0] == SIGNATURE_HEADER
    assert header[1].startswith(f"v1:{key_id(NEW)}:".encode())
    assert ring.verify(TopicKind.DRIFT, KEY, VALUE, [header]) is None
    assert ring.verify(TopicKind.DRIFT, KEY, VALUE, {SIGNATURE_HEADER: header[1]}) is None
    bad = RejectReason.BAD_SIGNATURE
    assert ring.verify(TopicKind.DRIFT, KEY, VALUE + b" ", [header]) is bad
    assert ring.verify(TopicKind.DRIFT, b"eastside", VALUE, [header]) is bad
    assert ring.verify(TopicKind.DRIFT, None, VALUE, [header]) is bad
    # A fact batch's signature does not make a drift message (nor the reverse).
    assert ring.verify(TopicKind.FACTS, KEY, VALUE, [header]) is bad
    # Key and value are not interchangeable: the key is length-prefixed.
    moved = ring.sign(TopicKind.DRIFT, b"riversid", b"e" + VALUE)
    assert ring.verify(TopicKind.DRIFT, KEY, VALUE, [moved]) is bad


@pytest.mark.parametrize(
    ("headers", "fault"),
    [
        (None, RejectReason.UNSIGNED),
        ([], RejectReason.UNSIGNED),
        ([("spinewatch-reason", b"x")], RejectReason.UNSIGNED),
        ([(SIGNATURE_HEADER, None)], RejectReason.BAD_SIGNATURE),
        ([(SIGNATURE_HEADER, b"v1:abc")], RejectReason.BAD_SIGNATURE),
        ([(SIGNATURE_HEADER, b"\xff\xfe")], RejectReason.BAD_SIGNATURE),
        ([(SIGNATURE_HEADER, f"v2:{key_id(NEW)}:{'0' * 64}".encode())], RejectReason.BAD_SIGNATURE),
        ([(SIGNATURE_HEADER, f"v1:{key_id(NEW)}:{'0' * 64}".encode())], RejectReason.BAD_SIGNATURE),
        ([(SIGNATURE_HEADER, f"v1:{key_id(OLD)}:{'0' * 64}".encode())], RejectReason.UNKNOWN_KEY),
    ],
)  # fmt: skip
def test_what_does_not_verify_says_why(headers: Any, fault: RejectReason) -> None:
    assert Keyring(NEW).verify(TopicKind.FACTS, KEY, VALUE, headers) is fault


def test_two_signatures_are_refused_even_if_one_is_right() -> None:
    ring = Keyring(NEW)
    good = ring.sign(TopicKind.FACTS, KEY, VALUE)
    forged = (SIGNATURE_HEADER, f"v1:{key_id(NEW)}:{'0' * 64}".encode())
    assert ring.verify(TopicKind.FACTS, KEY, VALUE, [forged, good]) is RejectReason.BAD_SIGNATURE


def test_a_rotation_verifies_both_keys_and_signs_with_the_new_one() -> None:
    before, during, after = Keyring(OLD), Keyring(NEW, [OLD]), Keyring(NEW)
    old_signed = before.sign(TopicKind.FACTS, KEY, VALUE)
    new_signed = during.sign(TopicKind.FACTS, KEY, VALUE)
    assert new_signed == after.sign(TopicKind.FACTS, KEY, VALUE)
    assert during.verify(TopicKind.FACTS, KEY, VALUE, [old_signed]) is None
    assert during.verify(TopicKind.FACTS, KEY, VALUE, [new_signed]) is None
    assert after.verify(TopicKind.FACTS, KEY, VALUE, [old_signed]) is RejectReason.UNKNOWN_KEY
    # Step one of a rotation: consumers accept the new key before anyone signs with it.
    accepting = Keyring(OLD, [NEW])
    assert accepting.verify(TopicKind.FACTS, KEY, VALUE, [new_signed]) is None


def test_keys_are_long_distinct_and_never_shown() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_KEY_BYTES} bytes"):
        Keyring(b"short")
    with pytest.raises(ValueError, match="each signing key once"):
        Keyring(NEW, [NEW])
    ring = Keyring(NEW, [OLD])
    assert NEW.decode() not in repr(ring)
    assert ring.current_key_id == key_id(NEW)
    assert len(key_id(NEW)) == 8
    assert Keyring.generated().current_key_id != Keyring.generated().current_key_id


def test_settings_check_the_keys_without_echoing_them() -> None:
    short = "too-short-to-sign-4711"
    for make in (
        lambda **kw: Settings(kafka_brokers="kafka:9092", **kw),
        lambda **kw: AlertingSettings(kafka_brokers="kafka:9092", **kw),
    ):
        with pytest.raises(ValidationError) as caught:
            make(signing_key=short)
        assert short not in str(caught.value.errors(include_input=False))
        assert "at least 32 bytes" in str(caught.value)
        with pytest.raises(ValidationError, match="signing_previous_keys needs signing_key"):
            make(signing_previous_keys=[OLD.decode()])
        with pytest.raises(ValidationError, match="each signing key once"):
            make(signing_key=NEW.decode(), signing_previous_keys=[NEW.decode()])
        settings = make(signing_key=NEW.decode(), signing_previous_keys=[OLD.decode()])
        assert isinstance(settings.signing_key, SecretStr)
        assert NEW.decode() not in repr(settings)


def test_settings_read_previous_keys_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEWATCH_SIGNING_KEY", NEW.decode())
    monkeypatch.setenv("SPINEWATCH_SIGNING_PREVIOUS_KEYS", f'["{OLD.decode()}"]')
    settings = Settings(kafka_brokers="kafka:9092")
    assert settings.signing_key is not None
    ring = Keyring.from_secrets(settings.signing_key, settings.signing_previous_keys)
    assert ring.verify(TopicKind.FACTS, KEY, VALUE, [Keyring(OLD).sign(TopicKind.FACTS, KEY, VALUE)]) is None  # fmt: skip


class _Topic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **record: Any) -> str:
        self.sent.append(record)
        return "queued"


async def test_a_signed_topic_signs_the_key_faust_sends() -> None:
    ring = Keyring(NEW)
    topic = _Topic()
    signed = SignedTopic(topic, ring, TopicKind.FACTS)
    assert await signed.send(key="riverside", value=VALUE) == "queued"
    assert await signed.send(key=None, value=VALUE, headers=[("a", b"1")]) == "queued"
    first, second = topic.sent
    assert ring.verify(TopicKind.FACTS, b"riverside", VALUE, first["headers"]) is None
    assert ring.verify(TopicKind.FACTS, None, VALUE, second["headers"]) is None
    assert second["headers"][0] == ("a", b"1")


def test_signing_a_large_fact_batch_is_cheap() -> None:
    """HMAC-SHA256 of 1 MB (the largest fact batches) within 20 ms, even on a loaded machine."""
    ring, value = Keyring(NEW), bytes(1 << 20)
    began = time.perf_counter()
    for _ in range(10):
        ring.verify(TopicKind.FACTS, KEY, value, [ring.sign(TopicKind.FACTS, KEY, value)])
    assert (time.perf_counter() - began) / 10 < scaled(0.02)
