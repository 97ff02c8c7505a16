"""The comparator policy table: per-stratum choices the automatic rules cannot make alone.

`comparators.toml`, beside the catalog, records every deliberate choice of
which catalog figure a cohort (metric x procedure x indication) is compared
with, each with its reason. The rules that apply everywhere else live in
`spinewatch.domain.outcomes.comparator_policy`, which resolves the whole
table and renders it (`spinewatch baselines --policy`).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spinewatch.errors import CatalogError

POLICY_RESOURCE = "comparators.toml"


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ComparatorChoice(_Entity):
    """One stratum's comparator, chosen by hand (or deliberately none), and why."""

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Report metric name.")
    procedure: str
    indication: str
    entry: str | None = Field(
        default=None, description="The catalog entry compared with; omitted: no comparator."
    )
    range_entry: str | None = Field(
        default=None, description="The published range or bound flagged against, if chosen."
    )
    why: str = Field(min_length=20)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.metric, self.procedure, self.indication)


class ComparatorPolicy(_Entity):
    policy_version: str = Field(pattern=r"^\d{4}\.\d{2}\.\d+$")
    choices: tuple[ComparatorChoice, ...] = ()

    @model_validator(mode="after")
    def _one_choice_per_stratum(self) -> Self:
        keys = [choice.key for choice in self.choices]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"several choices for {duplicates}")
        return self

    def choice_for(self, metric: str, procedure: str, indication: str) -> ComparatorChoice | None:
        return _choices(self).get((metric, procedure, indication))


_BY_KEY: dict[int, tuple[ComparatorPolicy, dict[tuple[str, str, str], ComparatorChoice]]] = {}


def _choices(policy: ComparatorPolicy) -> dict[tuple[str, str, str], ComparatorChoice]:
    cached = _BY_KEY.get(id(policy))
    if cached is None or cached[0] is not policy:
        cached = _BY_KEY[id(policy)] = (policy, {c.key: c for c in policy.choices})
    return cached[1]


def parse_policy(text: str) -> ComparatorPolicy:
    try:
        return ComparatorPolicy.model_validate(tomllib.loads(text), strict=False)
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise CatalogError(f"comparator policy is invalid: {exc}") from exc


@cache
def load_policy() -> ComparatorPolicy:
    """The policy shipped with this package (validated once, then cached)."""
    text = files("spinewatch.baselines").joinpath(POLICY_RESOURCE).read_text(encoding="utf-8")
    return parse_policy(text)
