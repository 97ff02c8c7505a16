"""The `spinewatch` command line.

    spinewatch schemas --out DIR        write one JSON Schema per event type, and
                                        one of the baseline catalog
    spinewatch baselines [--json]       print the literature baseline catalog
    spinewatch baselines --verify       prove every figure against the seeds, and
                                        check the comparator policy's choices
    spinewatch baselines --policy       the resolved comparator policy (markdown:
                                        schemas/baselines/COMPARATORS.md)
    spinewatch validate FILE|-          check events as the worker would: one
                                        event, a JSON array, or JSON Lines
    spinewatch worker [--check] [--embedded-broker]
                                        run an outcomes worker (settings from
                                        SPINEWATCH_* variables), or probe one
    spinewatch gateway [--check]        serve the HTTP gateway (settings from
                                        SPINEWATCH_GATEWAY_* variables), or probe one
    spinewatch topics create|check [--wait-s S]
                                        create the deployment's missing topics and
                                        check all (partitions), or check only
    spinewatch token new --source S --site ID [--site ID] [--rate N] | --user U
                                        issue a bearer token (printed once) and its
                                        credentials-file entry
    spinewatch demo                     run the bundled demonstration
    spinewatch plan --metric M --procedure P --indication I --volume N/month
                    [--shift OR] [--arl0-months M | --arl0-cases N] [--json]
                                        design a drift chart: h, ARL0, ARL1
    spinewatch plan --site S --metrics-url URL [--metric M] [--arl0-months M]
                                        the designs of a live site's charts
    spinewatch replay FILE... --to kafka|gateway [options]
                                        backfill events from files, resumable
                                        (spinewatch replay --help)
    spinewatch report FILE...|--running [--from D] [--to D] [--site S] [--out DIR]
                                        the governance report (HTML and PDF)

Exit codes: 0 success, 1 the input or catalog failed its check, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spinewatch.baselines import load_catalog, verify_catalog
from spinewatch.baselines.export import json_schemas
from spinewatch.baselines.seeds import default_seeds_dir
from spinewatch.cli.plan_args import add_plan_parser, attach_negative_values
from spinewatch.cli.replay import add_parser as add_replay_parser
from spinewatch.cli.report import add_parser as add_report_parser
from spinewatch.cli.topics import add_parser as add_topics_parser
from spinewatch.contracts.export import write_json_schemas
from spinewatch.domain.outcomes.comparator_table import policy_problems, render_policy


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinewatch",
        description="Outcomes tracking for percutaneous vertebral augmentation.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    schemas = commands.add_parser(
        "schemas", help="write the event and baseline catalog JSON Schemas"
    )
    schemas.add_argument("--out", type=Path, required=True, help="directory to write into")
    schemas.set_defaults(run=_schemas)

    baselines = commands.add_parser("baselines", help="print the literature baseline catalog")
    baselines.add_argument("--json", action="store_true", help="the whole catalog as JSON")
    baselines.add_argument(
        "--verify", action="store_true", help="check every quote and figure against the seeds"
    )
    baselines.add_argument(
        "--policy",
        action="store_true",
        help="the comparator of every metric, procedure and indication, as markdown",
    )
    baselines.add_argument("--seeds", type=Path, default=None, help="seed documents directory")
    baselines.set_defaults(run=_baselines)

    validate = commands.add_parser(
        "validate", help="check events as the worker would, field by field"
    )
    validate.add_argument(
        "file",
        help="one event or JSON array (pretty-printed or not), or JSON Lines of them; "
        "- for standard input",
    )
    validate.set_defaults(run=_validate)

    worker = commands.add_parser("worker", help="run an outcomes worker until SIGTERM")
    worker.add_argument(
        "--check", action="store_true", help="probe a running worker's /healthz and exit"
    )
    worker.add_argument(
        "--embedded-broker",
        action="store_true",
        help="without SPINEWATCH_KAFKA_BROKERS: start a throwaway in-memory Tansu broker",
    )
    worker.set_defaults(run=_worker)

    alerting = commands.add_parser(
        "alerting", help="run an alerting process (drift topic -> receivers) until SIGTERM"
    )
    alerting.add_argument(
        "--check", action="store_true", help="probe a running process's /healthz and exit"
    )
    alerting.set_defaults(run=_alerting)

    gateway = commands.add_parser(
        "gateway", help="serve the HTTP gateway for hospital systems until SIGTERM"
    )
    gateway.add_argument(
        "--check", action="store_true", help="probe a running gateway's /healthz and exit"
    )
    gateway.set_defaults(run=_gateway)

    token = commands.add_parser("token", help="issue bearer tokens for the gateway or alerting")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    token_new = token_commands.add_parser(
        "new", help="print a fresh token once, and the [[token]] table to add"
    )
    token_new.add_argument("--source", help="gateway: the emitting system, e.g. ris-north")
    token_new.add_argument(
        "--site", action="append", default=[], help="gateway: a site it may write (repeat)"
    )
    token_new.add_argument("--rate", type=int, default=None, help="gateway: events per minute")
    token_new.add_argument("--user", help="alerting: the on-call user's name")
    token_new.set_defaults(run=_token_new)

    demo = commands.add_parser("demo", help="run the demonstration on embedded defaults")
    demo.set_defaults(run=_demo)

    add_plan_parser(commands)
    plan = commands.choices["plan"]
    plan.set_defaults(run=_plan)

    add_replay_parser(commands)
    add_report_parser(commands)
    add_topics_parser(commands)
    return parser


def _schemas(args: argparse.Namespace) -> int:
    for path in write_json_schemas(args.out, json_schemas()):
        print(path)
    return 0


def _baselines(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    if args.verify:
        seeds_dir = args.seeds or default_seeds_dir()
        problems = verify_catalog(catalog, seeds_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        choices = policy_problems(catalog)
        for choice in choices:
            print(f"comparator policy: {choice}", file=sys.stderr)
        print(
            f"{len(catalog.baselines)} baselines, {len(problems)} provenance problems "
            f"(seeds: {seeds_dir}); {len(choices)} comparator policy problems"
        )
        return 1 if problems or choices else 0
    if args.policy:
        sys.stdout.write(render_policy(catalog))
        return 0
    if args.json:
        print(catalog.model_dump_json(indent=2))
        return 0
    print(f"spinewatch baseline catalog {catalog.catalog_version}")
    for entry in catalog.baselines:
        print(
            f"{entry.id:<42} {entry.metric:<38} {entry.procedure!s:<12} "
            f"{entry.indication!s:<22} {entry.statistic.describe()}"
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    # Imported here: it runs the worker's own triage (spinewatch.engine.ingest).
    from spinewatch.cli.validate import run_validate  # noqa: PLC0415

    try:
        return run_validate(args.file, sys.stdout, sys.stderr)
    except OSError as exc:
        print(f"spinewatch validate: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2


def _worker(args: argparse.Namespace) -> int:
    from spinewatch.engine.main import main as worker_main  # noqa: PLC0415 - loads faust

    return worker_main(check_only=args.check, embedded_broker=args.embedded_broker)


def _alerting(args: argparse.Namespace) -> int:
    from spinewatch.alerting.main import main as alerting_main  # noqa: PLC0415

    return alerting_main(check_only=args.check)


def _gateway(args: argparse.Namespace) -> int:
    from spinewatch.gateway.main import main as gateway_main  # noqa: PLC0415 - loads FastAPI

    return gateway_main(check_only=args.check)


def _token_new(args: argparse.Namespace) -> int:
    from spinewatch.cli.token import TokenRequestError, new_token  # noqa: PLC0415

    try:
        new_token(
            sys.stdout,
            source=args.source,
            sites=args.site,
            rate_per_minute=args.rate,
            user=args.user,
        )
    except TokenRequestError as exc:
        print(f"spinewatch token new: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    # Imported here: the demo pulls in the stream engine, which the schema and
    # catalog commands do not need to load.
    from spinewatch.demo.main import run_demo  # noqa: PLC0415
    from spinewatch.engine.settings import Settings  # noqa: PLC0415
    from spinewatch.runtime.log_privacy import configure_logging  # noqa: PLC0415

    # The demo runs the worker in this process: its logs go through the
    # same privacy filter as a worker's.
    configure_logging(Settings().log_level)
    return run_demo()


def _plan(args: argparse.Namespace) -> int:
    # Imported here: it loads SciPy.
    from spinewatch.cli.plan import run_plan  # noqa: PLC0415

    return run_plan(args, sys.stdout, sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
