"""The one exception tree of spinewatch.

    SpinewatchError
    +-- InvalidEvent          an inbound event failed its contract (bad JSON,
    |                         wrong type, unknown event_type/schema_version);
    |                         carries field-level `FieldError`s and is routed
    |                         to the dead-letter topic, never raised out of a
    |                         stream agent
    +-- CatalogError          the baseline catalog file is malformed or cites
    |                         something that is not in its seed document
    +-- BrokerUnavailable     the Kafka-protocol broker (embedded or
    |                         configured) did not start or answer in time
    +-- ChartDesignError      a drift chart parameter (probability, odds
    |                         ratio, control limit, ARL target) is outside
    |                         its meaningful range
    +-- RedisUnavailable      no Redis-compatible server to start or reach
    |                         for the alerting state
    +-- UnknownSetting        an environment variable in a settings
    |                         namespace names no setting (a typo); names
    |                         the variable and the closest valid one
    +-- BrokerNotConfigured   `spinewatch worker` was given neither brokers
    |                         nor the explicit embedded-broker choice
    +-- TopicMismatch         a topic of the deployment has another partition
    |                         count than the settings say, is missing when
    |                         only checked, or the broker refused to create
    |                         it as configured; names topic, counts and fix
    +-- SigningKeyMissing     a service that writes or reads the internal
    |                         topics has no signing key (names the setting)
    +-- PatchVersionMismatch  an installed faust-streaming or aiokafka is not
    |                         a version the patches of their internals were
    |                         written and tested for; the worker refuses to
    |                         start
    +-- CredentialsError      a credentials file (gateway or alerting tokens)
    |                         cannot be read or a record in it is malformed;
    |                         names the record and field, never a value
    +-- ReplayError           `spinewatch replay` cannot go on: an input file
        |                     unreadable as its format, a state file that does
        |                     not match the files, a sink that refuses the
        |                     credentials or the request (exit 2)
        +-- SinkUnavailable   the broker or gateway gave no answer within the
                              give-up time (exit 3; the same command resumes)

Callers catch `SpinewatchError` to handle anything this package raises on
purpose; anything else escaping is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


class SpinewatchError(Exception):
    """Base class of every error spinewatch raises deliberately."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason an event was rejected, pointing at the offending field.

    `location` is a dotted path into the event (`levels.0.vertebra`), or
    `<root>` when the whole payload is wrong (not JSON, not an object).
    `message` never echoes the offending value: a rejected payload may hold
    identifying data that must not reach logs or metrics.
    """

    location: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message} [{self.code}]"


class InvalidEvent(SpinewatchError, ValueError):
    """An inbound event violates its contract."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in errors) or "invalid event")


class CatalogError(SpinewatchError):
    """The literature baseline catalog is malformed or not traceable."""


class BrokerUnavailable(SpinewatchError):
    """The Kafka-protocol broker did not start, or did not answer in time."""


class ChartDesignError(SpinewatchError, ValueError):
    """A drift chart parameter outside its meaningful range."""


class CalibrationCancelled(SpinewatchError):
    """A chart calibration was stopped before its end (its worker is stopping)."""


class RedisUnavailable(SpinewatchError):
    """No Redis-compatible server to start or reach (the alerting state needs one)."""


class UnknownSetting(SpinewatchError, ValueError):
    """Environment variables in a settings namespace that name no setting.

    Carries (variable, suggestion) pairs; the message never holds a value.
    """

    def __init__(self, unknown: list[tuple[str, str | None]]) -> None:
        self.unknown = tuple(unknown)
        super().__init__(
            "; ".join(
                f"unknown setting {name}"
                + (f" (did you mean {suggestion}?)" if suggestion else " (no setting is close)")
                for name, suggestion in unknown
            )
        )


class BrokerNotConfigured(SpinewatchError):
    """No Kafka brokers configured, and the embedded broker not asked for."""


class TopicMismatch(SpinewatchError):
    """Topics that differ from the settings (partition count), do not exist, or
    that the broker refused to create as configured (replication, policy, ACLs).

    Carries one sentence per topic, each naming the topic, what the broker
    has, what the settings say and what to do; a service refuses to start.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problems))


class SigningKeyMissing(SpinewatchError):
    """No key to sign or verify the internal topics with (the message names the setting)."""


class PatchVersionMismatch(SpinewatchError):
    """Installed dependencies that a patch of their internals was not tested with.

    Carries (patch, distribution, installed, tested versions) per mismatch.
    """

    def __init__(self, mismatches: list[tuple[str, str, str, tuple[str, ...]]]) -> None:
        self.mismatches = tuple(mismatches)
        super().__init__(
            "; ".join(
                f"patch {patch} replaces private internals of {dist} and was tested with "
                f"{dist} {' or '.join(tested)}, but {installed} is installed"
                for patch, dist, installed, tested in mismatches
            )
            + ". Install the tested versions (pyproject.toml pins them), or re-test the "
            "patch against the new release and add that version to spinewatch.patches."
        )


class CredentialsError(SpinewatchError):
    """A credentials file is unreadable or malformed (record and field named, no value)."""


class ReplayError(SpinewatchError):
    """`spinewatch replay` cannot go on (the message names the file or the sink, no value)."""


class SinkUnavailable(ReplayError):
    """The broker or gateway did not answer within the replay's give-up time."""
