"""`spinewatch replay FILE...`: the command line (the work is in `spinewatch.replay`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_DESCRIPTION = """\
Backfill events from files: JSON Lines, JSON, CSV or FHIR R4 bundles, straight
to the events topic (--to kafka) or through the HTTP gateway (--to gateway).
Every record is checked against its contract first; rejects are never sent and
go to the rejects file with their reasons (never their values). Progress is
kept in a state file after every confirmed chunk: interrupted, the same command
resumes where it stopped, and counts every event once."""

_EPILOG = """\
formats (--format, else from the file): jsonl (.jsonl, .ndjson: one event per
line), json (.json: an event or an array of events), csv (.csv: columns below),
fhir (a .json Bundle; to Kafka it is mapped here and needs --site-id, --source
and the pseudonym key: --pseudonym-key-file or SPINEWATCH_REPLAY_PSEUDONYM_KEY;
through the gateway it is sent whole to /fhir/r4, --site-id optional).

secrets never on the command line: the gateway token from --token-file or
SPINEWATCH_REPLAY_TOKEN; Kafka TLS/SASL from SPINEWATCH_REPLAY_KAFKA_*
(SECURITY_PROTOCOL, SASL_MECHANISM, SASL_USERNAME, SASL_PASSWORD, SSL_CAFILE,
SSL_CERTFILE, SSL_KEYFILE, SSL_KEY_PASSWORD, SSL_CHECK_HOSTNAME).

{csv_help}

resumption: the state file (--state; default next to the rejects file) records,
per file, its SHA-256 and how many leading records are confirmed (acknowledged
by the broker, or answered by the gateway), with the counts. A file that changed
since is refused unless --restart (which replays everything again). Records an
interrupted run sent without an answer are sent again: a "duplicate" answer to
such a record counts as accepted, so every event is counted once.

exit codes: 0 all accepted or duplicate; 1 some rejected, conflict or forbidden
(see the rejects file); 2 usage error, unreadable or changed input, credentials
refused; 3 the broker or gateway stopped answering; 130 interrupted. After 3 or
130, the same command resumes."""


def add_parser(commands: Any) -> None:
    """Register `replay` on the `spinewatch` subcommands."""
    from spinewatch.replay.csv_format import CSV_HELP  # noqa: PLC0415 - light, but lazily

    parser = commands.add_parser(
        "replay",
        help="backfill events from files, to Kafka or through the gateway",
        description=_DESCRIPTION,
        epilog=_EPILOG.format(csv_help=CSV_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="input files, replayed in order")
    parser.add_argument("--to", required=True, choices=("kafka", "gateway"))
    parser.add_argument("--format", choices=("jsonl", "json", "csv", "fhir"), default=None)
    kafka = parser.add_argument_group("--to kafka")
    kafka.add_argument("--brokers", help="bootstrap servers, host:port[,host:port]")
    kafka.add_argument(
        "--app-id", default="spinewatch", help="the engine's app id: topic {app-id}-events"
    )
    gateway = parser.add_argument_group("--to gateway")
    gateway.add_argument("--url", help="the gateway's base URL, e.g. https://gateway:8080")
    gateway.add_argument("--token-file", type=Path, help="file holding the bearer token")
    gateway.add_argument(
        "--request-timeout", type=float, default=60.0, metavar="S", help="per request (60 s)"
    )
    fhir = parser.add_argument_group("FHIR bundles")
    fhir.add_argument("--site-id", help="the treating site the bundle is for")
    fhir.add_argument("--source", help="the sending system (to Kafka)")
    fhir.add_argument("--pseudonym-key-file", type=Path, help="the pseudonym key (to Kafka)")
    runs = parser.add_argument_group("progress and resumption")
    runs.add_argument("--rejects", type=Path, help="rejects file (default FILE.rejects.jsonl)")
    runs.add_argument("--state", type=Path, help="state file (default next to the rejects)")
    runs.add_argument(
        "--restart", action="store_true", help="forget the state and replay from the start"
    )
    runs.add_argument("--batch-size", type=int, default=500, help="records per chunk (500)")
    runs.add_argument(
        "--give-up-after",
        type=float,
        default=120.0,
        metavar="S",
        help="stop (exit 3) when the sink has not answered for S seconds (120)",
    )
    runs.add_argument("--quiet", action="store_true", help="no progress bar")
    runs.add_argument("--json", action="store_true", help="the summary as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the other commands need neither aiokafka nor aiohttp.
    from spinewatch.replay.main import ReplayOptions, run_replay  # noqa: PLC0415
    from spinewatch.replay.sources import Format  # noqa: PLC0415

    options = ReplayOptions(
        files=tuple(args.files),
        to=args.to,
        declared_format=Format(args.format) if args.format else None,
        brokers=args.brokers,
        app_id=args.app_id,
        url=args.url,
        token_file=args.token_file,
        site_id=args.site_id,
        source=args.source,
        pseudonym_key_file=args.pseudonym_key_file,
        rejects=args.rejects,
        state=args.state,
        restart=args.restart,
        batch_size=args.batch_size,
        give_up_after_s=args.give_up_after,
        request_timeout_s=args.request_timeout,
        quiet=args.quiet,
        as_json=args.json,
    )
    return run_replay(options)
