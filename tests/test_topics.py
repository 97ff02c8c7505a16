"""Topic names: one catalogue in code, and the README says the same names.

An event sent to a topic the documentation names but the code does not read
is silently lost (the README once said `spinewatch.events`), so the
documentation is checked against `spinewatch.contracts.topics`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topic, Topology
from spinewatch.engine.settings import Settings

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
