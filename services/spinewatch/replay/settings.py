"""Secrets and Kafka security of `spinewatch replay`, from `SPINEWATCH_REPLAY_*` variables.

Secrets never come from the command line: a process's arguments are
visible to every user of the machine (`ps`). The gateway token comes from
`--token-file` or `SPINEWATCH_REPLAY_TOKEN`; the FHIR pseudonym key from
`--pseudonym-key-file` or `SPINEWATCH_REPLAY_PSEUDONYM_KEY` (the same key
the gateway uses, as UTF-8 text, so both doors give a patient the same
pseudonym); Kafka TLS and SASL from the `kafka_*` fields of
`adapters/kafka_security.py` (`SPINEWATCH_REPLAY_KAFKA_SECURITY_PROTOCOL`,
`SPINEWATCH_REPLAY_KAFKA_SASL_MECHANISM`...), checked as a whole before
anything is read. Every variable in the namespace must name a setting, as
for the services.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.errors import ReplayError
from spinewatch.runtime.settings_env import StrictEnvSettings

ENV_PREFIX = "SPINEWATCH_REPLAY_"
MIN_PSEUDONYM_KEY_BYTES = 32


class ReplaySettings(StrictEnvSettings, KafkaSecurity):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    token: SecretStr | None = None
    pseudonym_key: SecretStr | None = None


def read_secret(
    file: Path | None, from_env: SecretStr | None, what: str, variable: str
) -> bytes | None:
    """A secret from its file (trailing newline dropped) or its variable; None if neither."""
    if file is not None:
        try:
            return file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ReplayError(f"cannot read the {what} file {file} ({exc.strerror})") from None
    if from_env is not None:
        return from_env.get_secret_value().encode()
    return None


def gateway_token(file: Path | None, settings: ReplaySettings) -> str:
    token = read_secret(file, settings.token, "token", ENV_PREFIX + "TOKEN")
    if not token:
        raise ReplayError(f"--to gateway needs a token: --token-file F or {ENV_PREFIX}TOKEN")
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        raise ReplayError("the token is not ASCII text") from None


def pseudonym_key(file: Path | None, settings: ReplaySettings) -> bytes:
    key = read_secret(file, settings.pseudonym_key, "pseudonym key", ENV_PREFIX + "PSEUDONYM_KEY")
    if key is None:
        raise ReplayError(
            "a FHIR bundle sent to Kafka is mapped here and needs the pseudonym key: "
            f"--pseudonym-key-file F or {ENV_PREFIX}PSEUDONYM_KEY"
        )
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise ReplayError(f"the pseudonym key must hold at least {MIN_PSEUDONYM_KEY_BYTES} bytes")
    return key
