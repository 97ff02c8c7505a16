"""Settings read from the environment, checked by name as well as by value.

pydantic-settings' `extra="forbid"` rejects unknown keyword arguments, but
an environment variable that matches no field is simply never read:
measured, `SPINEWATCH_METRIC_PORT=1` left `metrics_port` at its default
and the worker started. A typo in a deployment then runs on the default
without a word. `StrictEnvSettings` closes that gap: every variable in the
class's namespace (its `env_prefix`, compared case-insensitively, as
pydantic-settings reads it) must name a field, or be one that another
part of spinewatch owns (`foreign_env_prefixes`, `foreign_env_vars`).

Valid names are derived from the model's fields, by the same code that
reads them, so a field added later is accepted without touching this
module. Errors name the variable and the closest valid one, never its
value: a value may be a credential (a Redis URL with a password).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from typing import IO, Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsError,
)

from spinewatch.errors import UnknownSetting


class StrictEnvSettingsSource(EnvSettingsSource):
    """The environment source, refusing variables in its namespace that name no field."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        foreign_prefixes: tuple[str, ...] = (),
        foreign_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__(settings_cls)
        self.foreign_prefixes = tuple(prefix.lower() for prefix in foreign_prefixes)
        self.foreign_names = frozenset(name.lower() for name in foreign_names)

    def __call__(self) -> dict[str, Any]:
        unknown = self.unknown_variables()
        if unknown:
            raise UnknownSetting(unknown)
        return super().__call__()

    def valid_names(self) -> set[str]:
        """Every variable name that populates a field (as case-normalised by the source)."""
        return {
            env_name
            for field_name, field in self.settings_cls.model_fields.items()
            for _, env_name, _ in self._extract_field_info(field, field_name)
        }

    def unknown_variables(self) -> list[tuple[str, str | None]]:
        """(variable, closest valid variable or None) for each unknown variable."""
        prefix = self.env_prefix.lower()
        if not prefix:
            return []  # without a namespace every variable would be "unknown"
        valid = self.valid_names()
        nested = self.env_nested_delimiter
        suffixes = sorted(
            name[len(prefix) :] for name in (v.lower() for v in valid) if name.startswith(prefix)
        )
        unknown: list[tuple[str, str | None]] = []
        for name in sorted(os.environ):
            lowered = name.lower()
            if not lowered.startswith(prefix) or self._apply_case_sensitive(name) in valid:
                continue
            if lowered in self.foreign_names or lowered.startswith(self.foreign_prefixes):
                continue
            if nested and any(
                self._apply_case_sensitive(name).startswith(v + nested) for v in valid
            ):
                continue
            close = difflib.get_close_matches(lowered[len(prefix) :], suffixes, n=1)
            unknown.append((name, (prefix + close[0]).upper() if close else None))
        return unknown


class StrictEnvSettings(BaseSettings):
    """Base of spinewatch's settings: an unknown variable in the namespace fails construction."""

    # Variables under the prefix that belong to someone else, never flagged.
    foreign_env_prefixes: ClassVar[tuple[str, ...]] = ()
    foreign_env_vars: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        strict = StrictEnvSettingsSource(
            settings_cls, cls.foreign_env_prefixes, cls.foreign_env_vars
        )
        return init_settings, strict, dotenv_settings, file_secret_settings


def describe_settings_error(exc: ValidationError | SettingsError, env_prefix: str) -> str:
    """One line per problem, naming the variable and the rule, never the value.

    pydantic's own message quotes the input (`input_value='...'`), which may
    be a secret; `include_input=False` leaves it out.
    """
    if not isinstance(exc, ValidationError):
        return f"  {exc}"
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        where = f"{env_prefix}{field.upper()} ({field})" if field else "settings"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


S = TypeVar("S")


def load_settings(
    build: Callable[[], S], env_prefix: str, command: str, err: IO[str] | None = None
) -> S | None:
    """Settings from the environment, or None after one message on stderr saying why.

    The message names the variable (and the closest valid one for a typo)
    and the rule, never the value. Every `spinewatch <command>` exits 2 on
    None: a deployment with a bad setting fails at once, by name.
    """
    out = sys.stderr if err is None else err
    try:
        return build()
    except UnknownSetting as exc:
        print(f"{command}: {exc}", file=out)
    except (ValidationError, SettingsError) as exc:
        # Not str(exc): pydantic's message quotes the value, maybe a password.
        print(f"{command}: invalid settings:\n{describe_settings_error(exc, env_prefix)}", file=out)
    return None
