"""`spinewatch replay FILE...`: from options to an exit code.

Exit codes: 0 every record accepted or a duplicate; 1 some were rejected
(or answered conflict or forbidden; see the rejects file); 2 a usage
error, an unreadable or changed input, or a sink that refuses the
credentials (nothing more is sent); 3 the broker or gateway stopped
answering (what was confirmed is kept: the same command resumes); 130
interrupted (SIGINT or SIGTERM; the same command resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import aiohttp

from spinewatch.contracts.topics import Topology
from spinewatch.errors import ReplayError, SinkUnavailable
from spinewatch.replay.gateway_sink import GatewaySink
from spinewatch.replay.inputs import FhirOptions, prepare
from spinewatch.replay.kafka_sink import kafka_sink
from spinewatch.replay.ledger import Ledger
from spinewatch.replay.records import Counts
from spinewatch.replay.report import ProgressBar, print_summary, summary_json, totals
from spinewatch.replay.run import ReplayInput, replay
from spinewatch.replay.settings import ENV_PREFIX, ReplaySettings, gateway_token, pseudonym_key
from spinewatch.replay.sources import Format
from spinewatch.runtime.log_privacy import configure_logging
from spinewatch.runtime.settings_env import load_settings

EXIT_OK = 0
EXIT_REJECTS = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
RESUME_HINT = "run the same command again to resume"


@dataclass(frozen=True)
class ReplayOptions:
    files: tuple[str, ...]
    to: Literal["kafka", "gateway"]
    declared_format: Format | None = None
    brokers: str | None = None
    app_id: str = "spinewatch"
    url: str | None = None
    token_file: Path | None = None
    site_id: str | None = None
    source: str | None = None
    pseudonym_key_file: Path | None = None
    rejects: Path | None = None
    state: Path | None = None
    restart: bool = False
    batch_size: int = 500
    give_up_after_s: float = 120.0
    request_timeout_s: float = 60.0
    quiet: bool = False
    as_json: bool = False

    def rejects_path(self) -> Path:
        return self.rejects or Path(self.files[0] + ".rejects.jsonl")

    def state_path(self) -> Path:
        # Next to the rejects file, named after the first input.
        return self.state or self.rejects_path().with_name(
            Path(self.files[0]).name + ".replay-state.json"
        )

    def sink_name(self) -> str:
        if self.to == "kafka":
            return f"kafka {self.brokers} topic {Topology(self.app_id).events}"
        return f"gateway {self.url}"


def run_replay(options: ReplayOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Looked up at each call, not bound at import: the streams may be replaced.
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    ready = _ready(options, err)
    if isinstance(ready, int):
        return ready
    settings, ledger, inputs, token = ready
    code: int | None = None
    note: str | None = None
    try:
        with _warnings_to(err):
            asyncio.run(_send(options, settings, inputs, ledger, token=token, err=err))
    except (KeyboardInterrupt, asyncio.CancelledError):
        code, note = EXIT_INTERRUPTED, f"interrupted: {RESUME_HINT}"
    except SinkUnavailable as exc:
        code, note = EXIT_UNAVAILABLE, f"stopped: {exc}; {RESUME_HINT}"
    except ReplayError as exc:
        code, note = EXIT_USAGE, f"stopped: {exc}"
    rows = _rows(inputs, ledger)
    if note is not None:
        print(f"spinewatch replay: {note}", file=err)
    if options.as_json:
        print(summary_json(rows, note), file=out)
    else:
        print_summary(rows, out)
        if totals(rows).failed:
            print(f"rejects: {ledger.rejects_path}", file=out)
    if code is None:
        code = EXIT_REJECTS if totals(rows).failed else EXIT_OK
    return code


def _ready(
    options: ReplayOptions, err: TextIO
) -> tuple[ReplaySettings, Ledger, list[ReplayInput], str | None] | int:
    """Settings, ledger, inputs and token; or the exit code of why not (nothing sent)."""
    settings = load_settings(ReplaySettings, ENV_PREFIX, "spinewatch replay", err)
    if settings is None:
        return EXIT_USAGE
    try:
        _check_options(options)
        through_gateway = options.to == "gateway"
        token = gateway_token(options.token_file, settings) if through_gateway else None
        ledger = Ledger.open(
            options.state_path(), options.rejects_path(), options.sink_name(), options.restart
        )
        key = None
        if not through_gateway and _may_hold_fhir(options):
            key = _optional_key(options, settings)
        fhir = FhirOptions(through_gateway, options.site_id, options.source, key)
        inputs = prepare(options.files, options.declared_format, ledger, fhir)
    except ReplayError as exc:
        print(f"spinewatch replay: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:  # while reading the inputs: nothing was sent
        print(f"spinewatch replay: interrupted before sending; {RESUME_HINT}", file=err)
        return EXIT_INTERRUPTED
    return settings, ledger, inputs, token


@contextlib.contextmanager
def _warnings_to(stream: TextIO) -> Iterator[None]:
    """Warnings (a retried request, a broker that refused) through the privacy filter.

    The root logger is restored afterwards: `run_replay` may run inside
    another program (the tests call it in-process).
    """
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("warning", stream)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _check_options(options: ReplayOptions) -> None:
    if options.to == "kafka" and not options.brokers:
        raise ReplayError("--to kafka needs --brokers host:port")
    if options.to == "gateway" and not options.url:
        raise ReplayError("--to gateway needs --url http(s)://host:port")
    if options.url is not None and not options.url.startswith(("http://", "https://")):
        raise ReplayError("--url must start with http:// or https://")
    if options.batch_size < 1:
        raise ReplayError("--batch-size must be at least 1")
    if options.give_up_after_s <= 0 or options.request_timeout_s <= 0:
        raise ReplayError("--give-up-after and --request-timeout must be positive")


def _may_hold_fhir(options: ReplayOptions) -> bool:
    return options.declared_format in (None, Format.FHIR)


def _optional_key(options: ReplayOptions, settings: ReplaySettings) -> bytes | None:
    """The pseudonym key if one is given (needed only if a file turns out to be a bundle)."""
    if options.pseudonym_key_file is None and settings.pseudonym_key is None:
        return None
    return pseudonym_key(options.pseudonym_key_file, settings)


async def _send(
    options: ReplayOptions,
    settings: ReplaySettings,
    inputs: Sequence[ReplayInput],
    ledger: Ledger,
    *,
    token: str | None,
    err: TextIO,
) -> None:
    # SIGTERM ends the replay like SIGINT: between two awaits, so the state
    # file always describes confirmed chunks only.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    bar_on = not options.quiet and err.isatty()
    with ProgressBar(bar_on, err) as bar:
        if options.brokers is not None and options.to == "kafka":
            topic = Topology(options.app_id).events
            security = settings.kafka_security
            for risk in security.risks():
                print(f"spinewatch replay: warning: {risk}", file=err)
            async with kafka_sink(
                options.brokers, topic, options.give_up_after_s, security
            ) as kafka:
                await replay(inputs, kafka, ledger, bar, options.batch_size)
            return
        if options.url is None or token is None:  # pragma: no cover - checked before
            raise ReplayError("--to gateway needs --url and a token")
        timeout = aiohttp.ClientTimeout(total=options.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            gateway = GatewaySink(
                session,
                options.url,
                token,
                batch_events=options.batch_size,
                give_up_after_s=options.give_up_after_s,
            )
            await replay(inputs, gateway, ledger, bar, options.batch_size)


def _rows(inputs: Sequence[ReplayInput], ledger: Ledger) -> list[tuple[str, Counts]]:
    rows = []
    for item in inputs:
        progress = ledger.files.get(str(item.path.resolve()))
        rows.append((item.display, progress.counts if progress is not None else Counts()))
    return rows
