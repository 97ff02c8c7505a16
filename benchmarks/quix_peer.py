"""The peer on the same broker: Quix Streams with a state write per event.

    <quix venv>/bin/python benchmarks/quix_peer.py --bootstrap HOST:PORT --events FILE

Run by `pipeline.py --quix-python PATH` with the interpreter of a separate
virtualenv that has `quixstreams` installed (it is not a spinewatch
dependency, and its pins must not move ours; see benchmarks/README.md).
This file imports nothing from spinewatch for that reason.

The events (one JSON event per line, the pipeline's single-event messages)
are produced into a fresh topic keyed by procedure id before the
application starts, as for the raw and faust cases. The application parses
each value as JSON and makes one state write per event (the event id, under
its procedure's key), at least once with changelog topics: the configuration
the ~66k events/s reference figure for Quix Streams describes. A write only,
no read: a read-modify-write (a running count) measured ~30% slower here,
and the peer should get the benefit of the doubt. The timed window
runs from the first event handled to the end of the final checkpoint
commit, when the state writes are on disk and in the changelog (see
`consume`). One JSON line goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from quixstreams import Application, State

# Quix reads retention settings back from the broker when it derives a
# changelog topic; Tansu reports only those given at creation.
TOPIC_CONFIG = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}


def produce(bootstrap: str, topic: str, partitions: int, values: list[bytes]) -> float:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=TOPIC_CONFIG)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    began = time.perf_counter()
    for value in values:
        key = json.loads(value)["procedure_id"].encode()
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    return time.perf_counter() - began


def consume(bootstrap: str, topic: str, expected: int) -> tuple[float, float]:
    """Seconds from the first event handled to the last, and to the end of
    the final checkpoint commit.

    Quix Streams keeps state writes in a transaction until a checkpoint
    (every 5 s by default) and only then writes RocksDB and the changelog, so
    a run shorter than that would time no state write at all: the second
    figure, which includes that commit, is the one to compare.
    """
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-peer-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-peer-"),
        processing_guarantee="at-least-once",
        use_changelog_topics=True,
    )
    moments: dict[str, float] = {}
    handled = 0

    def write(value: Any, state: State) -> Any:
        nonlocal handled
        state.set("last_event_id", value["event_id"])
        handled += 1
        if handled == 1:
            moments["first"] = time.perf_counter()
        if handled == expected:
            moments["last"] = time.perf_counter()
            app.stop()
        return value

    # A private attribute, read only to time the final commit (quixstreams
    # 3.x): the run loop ends with `commit_checkpoint(force=True)`.
    context = app._processing_context
    commit = context.commit_checkpoint

    def timed_commit(*args: Any, **kwargs: Any) -> Any:
        result = commit(*args, **kwargs)
        moments["committed"] = time.perf_counter()
        return result

    context.commit_checkpoint = timed_commit
    frame = app.dataframe(app.topic(topic, value_deserializer="json", key_deserializer="string"))
    frame.update(write, stateful=True)
    app.run()
    if handled != expected:
        raise SystemExit(f"quix peer handled {handled} events, expected {expected}")
    return moments["last"] - moments["first"], moments["committed"] - moments["first"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events", required=True, help="one JSON event per line")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with open(args.events, "rb") as lines:
        values = [line.rstrip(b"\n") for line in lines if line.strip()]
    topic = f"quix-peer-{uuid.uuid4().hex[:8]}"
    producer_s = produce(args.bootstrap, topic, args.partitions, values)
    to_last_s, to_commit_s = consume(args.bootstrap, topic, len(values))
    result = {
        "events": len(values),
        "to_last_event_s": to_last_s,
        "elapsed_s": to_commit_s,
        "producer_s": producer_s,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
