"""Topic names and settings: one catalogue in code, and the README says the same names.

An event sent to a topic the documentation names but the code does not read
is silently lost (the README once said `spinewatch.events`), so the
documentation is checked against `spinewatch.contracts.topics`.
"""

from __future__ import annotations

import re
from pathlib import Path

import faust
import pytest
from pydantic import ValidationError

from spinewatch.adapters.kafka_admin import TopicLayout, new_topics, partition_problems
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topic, Topology
from spinewatch.engine.app import _faust_config, _segment_table
from spinewatch.engine.settings import Settings
from spinewatch.gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "benchmarks" / "README.md"]
SUFFIXES = {topic.value for topic in Topic}


def test_every_topic_is_named_app_id_dash_suffix_and_created() -> None:
    topology = Topology("ward-7", partitions=3)
    assert topology.names() == [f"ward-7-{topic.value}" for topic in Topic]
    assert topology.changelog == "ward-7-segments-changelog"  # faust's name for the table's
    assert topology.alerts in topology.names()  # created, not left to auto-creation


def test_both_services_take_their_topics_from_the_catalogue() -> None:
    worker = Settings(kafka_brokers="127.0.0.1:9", app_id="ward-7")
    alerting = AlertingSettings(kafka_brokers="127.0.0.1:9", app_id="ward-7")
    topology = Topology("ward-7")
    assert worker.topics == topology
    assert [
        worker.events_topic,
        worker.facts_topic,
        worker.deadletter_topic,
        worker.changelog_topic,
        worker.drift_topic,
    ] == [topology.events, topology.facts, topology.deadletter, topology.changelog, topology.drift]
    assert alerting.drift_topic == worker.drift_topic
    assert alerting.alerts_topic == topology.alerts
    assert Settings(kafka_brokers="127.0.0.1:9").partitions == DEFAULT_PARTITIONS


def readme_topic_table() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    header = "| topic | key | produced by | consumed by |"
    assert header in text
    rows = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    return [re.match(r"\| `([^`]+)` \|", row).group(1) for row in rows]  # type: ignore[union-attr]


def test_the_readme_topic_table_lists_exactly_the_default_topics() -> None:
    assert sorted(readme_topic_table()) == sorted(Topology("spinewatch").names())


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_only_topics_the_code_uses(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    templated = set(re.findall(r"\{app(?:_id)?\}-([a-z]+(?:-[a-z]+)*)", text))
    assert templated <= SUFFIXES, templated - SUFFIXES
    # The dotted form is not a topic of ours: a producer using it loses events.
    dotted = {s for s in SUFFIXES if re.search(rf"\bspinewatch\.{re.escape(s)}\b", text)}
    assert not dotted, dotted


# --- production settings: replication, min.insync.replicas, compaction -----------------------


def test_topic_configs_compact_the_changelog_and_keep_control_for_good() -> None:
    plain = Topology("ward-7").configs()
    assert plain == {
        "ward-7-segments-changelog": {"cleanup.policy": "compact"},
        "ward-7-control": {"retention.ms": "-1"},
    }  # no min.insync.replicas unless set: the broker's default applies
    production = Topology("ward-7", 8, replication_factor=3, min_insync_replicas=2).configs()
    assert set(production) == set(Topology("ward-7").names())
    assert all(config["min.insync.replicas"] == "2" for config in production.values())
    assert production["ward-7-segments-changelog"]["cleanup.policy"] == "compact"
    assert production["ward-7-control"]["retention.ms"] == "-1"


def test_the_create_request_carries_the_settings_for_missing_topics_only() -> None:
    topology = Topology("ward-7", 8, replication_factor=3, min_insync_replicas=2)
    existing = [topology.events, "someone-else"]
    wanted = new_topics(topology.names(), existing, 8, 3, topology.configs())
    assert [t.name for t in wanted] == [n for n in topology.names() if n != topology.events]
    for topic in wanted:
        assert (topic.num_partitions, topic.replication_factor) == (8, 3)
        assert topic.topic_configs == topology.configs()[topic.name]


def test_partition_problems_name_topic_counts_and_setting() -> None:
    layouts = {"a": TopicLayout("a", 4, 1), "b": TopicLayout("b", 8, 3)}
    problems = partition_problems(["a", "b", "c"], layouts, 8, "SPINEWATCH_GATEWAY_PARTITIONS")
    assert len(problems) == 2
    assert problems[0].startswith(
        "topic a has 4 partitions, the settings say 8 (SPINEWATCH_GATEWAY_PARTITIONS)"
    )
    assert "SPINEWATCH_GATEWAY_PARTITIONS=4" in problems[0]
    assert problems[1].startswith("topic c does not exist")


@pytest.mark.parametrize("model", [Settings, GatewaySettings])
def test_min_insync_replicas_above_the_replication_factor_is_a_field_error(
    model: type[Settings] | type[GatewaySettings], tmp_path: Path
) -> None:
    base = {"kafka_brokers": "127.0.0.1:9"}
    if model is GatewaySettings:
        base["credentials_file"] = str(tmp_path / "tokens.toml")
    with pytest.raises(ValidationError) as raised:
        model(**base, replication_factor=2, min_insync_replicas=3)  # type: ignore[arg-type]
    (error,) = raised.value.errors()
    assert error["loc"] == ("min_insync_replicas",)
    assert "must not exceed replication_factor (2)" in error["msg"]
    fine = model(**base, replication_factor=3, min_insync_replicas=2)  # type: ignore[arg-type]
    assert fine.topics == Topology("spinewatch", 4, 3, 2)
    assert model(**base).topics.min_insync_replicas is None  # type: ignore[arg-type]


def test_faust_declares_the_changelog_and_its_own_topics_as_they_are_created() -> None:
    """faust only creates a topic that does not exist and never checks one that does:
    its declaration must agree with `spinewatch topics create`, or which of
    the two came first would decide the changelog's cleanup policy."""
    settings = Settings(
        kafka_brokers="127.0.0.1:9", app_id="ward-7", replication_factor=3, min_insync_replicas=2
    )
    config = _faust_config(settings, "127.0.0.1:9", tansu_compat=False)
    assert config["topic_replication_factor"] == 3
    app = faust.App("ward-7", **config)
    changelog = _segment_table(app, settings).changelog_topic
    assert changelog.get_topic_name() == settings.changelog_topic
    assert changelog.compacting is True
    assert changelog.deleting is False
    assert dict(changelog.config) == settings.topics.configs()[settings.changelog_topic]
