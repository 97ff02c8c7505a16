"""Settings: unknown variables, the broker choice, and the Tansu work-arounds.

pydantic-settings ignores environment variables that match no field, so a
typo like SPINEWATCH_METRIC_PORT used to leave the default in place.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from spinewatch.alerting.settings import AlertingSettings
from spinewatch.engine.bootstrap import require_broker, tansu_compat
from spinewatch.engine.settings import Settings
from spinewatch.errors import BrokerNotConfigured, UnknownSetting
from spinewatch.runtime.settings_env import describe_settings_error

MARKER = "marker-value-4711"  # must never appear in an error


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start from no spinewatch variables, whatever the shell running pytest set."""
    for name in list(os.environ):
        if name.upper().startswith("SPINEWATCH_"):
            monkeypatch.delenv(name)


def test_a_typo_fails_naming_the_variable_and_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPINEWATCH_METRIC_PORT", MARKER)
    with pytest.raises(UnknownSetting) as caught:
        Settings()
    assert caught.value.unknown == (("SPINEWATCH_METRIC_PORT", "SPINEWATCH_METRICS_PORT"),)
    assert "SPINEWATCH_METRIC_PORT" in str(caught.value)
    assert "did you mean SPINEWATCH_METRICS_PORT?" in str(caught.value)
    assert MARKER not in str(caught.value)


def test_every_unknown_variable_is_named_and_far_ones_get_no_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The removed budget in cases points to its replacement in months.
    monkeypatch.setenv("SPINEWATCH_DRIFT_ARL0_CASES", "500")
    monkeypatch.setenv("SPINEWATCH_QQQQQQQQ", MARKER)
    with pytest.raises(UnknownSetting) as caught:
        Settings()
    assert dict(caught.value.unknown) == {
        "SPINEWATCH_DRIFT_ARL0_CASES": "SPINEWATCH_DRIFT_ARL0_MONTHS",
        "SPINEWATCH_QQQQQQQQ": None,
    }
    assert MARKER not in str(caught.value)


def test_names_are_matched_case_insensitively_as_pydantic_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("spinewatch_metrics_port", "9999")
    assert Settings().metrics_port == 9999  # read, so not unknown
    monkeypatch.setenv("Spinewatch_Metric_Port", "1")
    with pytest.raises(UnknownSetting) as caught:
        Settings()
    assert caught.value.unknown == (("Spinewatch_Metric_Port", "SPINEWATCH_METRICS_PORT"),)


def test_other_namespaces_under_the_prefix_are_not_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPINEWATCH_ALERTING_KAFKA_BROKERS", "127.0.0.1:9")
    monkeypatch.setenv("SPINEWATCH_ALERTING_NOT_A_SETTING", "1")  # AlertingSettings' to judge
    monkeypatch.setenv("SPINEWATCH_TEST_SLOWDOWN", "2")
    monkeypatch.setenv("spinewatch_test_anything", "x")
    monkeypatch.setenv("SPINEWATCH_SEEDS_DIR", "/nowhere")
    monkeypatch.setenv("SPINEWATCHER_OTHER", "x")  # not under SPINEWATCH_
    assert Settings().app_id == "spinewatch"


def test_valid_names_come_from_the_fields_not_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extended(Settings):
        redelivery_window_s: float = 1.0

    monkeypatch.setenv("SPINEWATCH_REDELIVERY_WINDOW_S", "2.5")
    assert Extended().redelivery_window_s == 2.5
    with pytest.raises(UnknownSetting):
        Settings()


def test_alerting_settings_check_their_own_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEWATCH_ALERTING_KAFKA_BROKERS", "127.0.0.1:9")
    monkeypatch.setenv("SPINEWATCH_METRICS_PORT", "1")  # the worker's, not alerting's
    assert AlertingSettings().kafka_brokers == "127.0.0.1:9"
    monkeypatch.setenv("SPINEWATCH_ALERTING_REDIS_ULR", MARKER)
    with pytest.raises(UnknownSetting) as caught:
        AlertingSettings()
    assert caught.value.unknown == (
        ("SPINEWATCH_ALERTING_REDIS_ULR", "SPINEWATCH_ALERTING_REDIS_URL"),
    )
    assert MARKER not in str(caught.value)


def test_invalid_values_are_described_without_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEWATCH_PARTITIONS", MARKER)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert MARKER in str(caught.value)  # pydantic's own text quotes it...
    described = describe_settings_error(caught.value, "SPINEWATCH_")
    assert "SPINEWATCH_PARTITIONS (partitions)" in described
    assert MARKER not in described  # ... ours does not


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, False),
        ({"embedded_broker": True}, True),
        ({"kafka_brokers": "kafka:9092"}, False),
        ({"kafka_brokers": "kafka:9092", "tansu_compat": True}, True),
        ({"embedded_broker": True, "tansu_compat": False}, False),
    ],
)
def test_tansu_work_arounds_follow_the_embedded_broker_unless_set(
    values: dict[str, Any], expected: bool
) -> None:
    settings = Settings(**values)
    assert tansu_compat(settings) is expected


def test_tansu_compat_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEWATCH_KAFKA_BROKERS", "kafka:9092")
    assert Settings().tansu_compat is None
    monkeypatch.setenv("SPINEWATCH_TANSU_COMPAT", "true")
    assert tansu_compat(Settings()) is True


def test_a_broker_is_required_unless_the_embedded_one_is_asked_for() -> None:
    with pytest.raises(BrokerNotConfigured, match="SPINEWATCH_KAFKA_BROKERS"):
        require_broker(Settings())
    require_broker(Settings(kafka_brokers="kafka:9092"))
    require_broker(Settings(embedded_broker=True))


def test_brokers_and_the_embedded_broker_exclude_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(kafka_brokers="kafka:9092", embedded_broker=True)
    monkeypatch.setenv("SPINEWATCH_EMBEDDED_BROKER", "true")
    assert Settings().embedded_broker is True
    monkeypatch.setenv("SPINEWATCH_KAFKA_BROKERS", "kafka:9092")
    with pytest.raises(ValidationError, match="not both"):
        Settings()
