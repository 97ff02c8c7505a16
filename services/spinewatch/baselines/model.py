"""The literature baseline catalog: a typed, versioned model of every figure we cite.

Each entry pins one published figure to the exact place in a seed document
it comes from (file, locator, verbatim quote). Shares are stored as
fractions in [0, 1], whatever the seed printed (9,2 % -> 0.092).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spinewatch.contracts.vocabulary import Indication, ProcedureType

Fraction = Annotated[float, Field(ge=0, le=1)]

_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True)


class Entity(BaseModel):
    model_config = _CONFIG


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


class Figure(StrEnum):
    """What kind of figure an entry is: only outcomes are monitored."""

    OUTCOME = "outcome"  # a clinical result the engine can compare against
    PROCESS = "process"  # how the procedure was done (cement volume, time)
    DEFINITION = "definition"  # e.g. what counts as a good result
    EPIDEMIOLOGY = "epidemiology"  # context, never a comparator


class UnitOfAnalysis(StrEnum):
    PATIENT = "patient"
    TREATED_LEVEL = "treated_level"
    REPORT = "report"  # a count of publications or series


class BaselineTimepoint(StrEnum):
    PRE_PROCEDURE = "pre_procedure"
    INTRA_PROCEDURE = "intra_procedure"
    POST_PROCEDURE = "post_procedure"
    WEEK_1 = "week_1"
    MONTH_6 = "month_6"
    FINAL = "final"
    LONG_TERM = "long_term"
    SERIES_FOLLOW_UP = "series_follow_up"  # over the series' whole follow-up


# Cohort axes of an entry. Besides the contract vocabularies, the literature
# speaks of pooled groups: "vertebral augmentation" (PVP or PKP unspecified),
# "conservative" management, cancer series mixing metastases and myeloma.
BaselineProcedure = ProcedureType | Literal["vertebral_augmentation", "conservative", "any"]
BaselineIndication = Indication | Literal["metastasis_or_myeloma", "mixed"]


class MeanSd(Entity):
    kind: Literal["mean_sd"]
    mean: float
    sd: float = Field(ge=0)
    n: int | None = Field(default=None, ge=1)

    def describe(self) -> str:
        return f"{self.mean:g} ± {self.sd:g}" + (f" (n={self.n})" if self.n else "")

    def printed_figures(self) -> list[float]:
        """Numbers the cited passage must print (mean and SD are checked as a pair)."""
        return [self.n] if self.n else []


class Mean(Entity):
    kind: Literal["mean"]
    mean: float
    n: int | None = Field(default=None, ge=1)

    def describe(self) -> str:
        return f"mean {self.mean:g}" + (f" (n={self.n})" if self.n else "")

    def printed_figures(self) -> list[float]:
        return [self.mean] + ([self.n] if self.n else [])


class Proportion(Entity):
    kind: Literal["proportion"]
    numerator: int = Field(ge=0)
    denominator: int = Field(ge=1)

    @model_validator(mode="after")
    def _numerator_within_denominator(self) -> Self:
        if self.numerator > self.denominator:
            raise ValueError("numerator exceeds denominator")
        return self

    @property
    def value(self) -> float:
        return self.numerator / self.denominator

    def describe(self) -> str:
        return f"{self.numerator}/{self.denominator} ({_percent(self.value)})"

    def printed_figures(self) -> list[float]:
        # A zero count reads "no ...", a complete one "all ...": checked apart.
        counted = 0 < self.numerator < self.denominator
        return [self.denominator, self.numerator] if counted else [self.denominator]


class Share(Entity):
    """A published share without counts (e.g. '2.5%'), with its n when given."""

    kind: Literal["share"]
    value: Fraction
    n: int | None = Field(default=None, ge=1)

    def describe(self) -> str:
        return _percent(self.value) + (f" (n={self.n})" if self.n else "")

    def printed_figures(self) -> list[float]:
        # A share of zero reads "no ... was found": checked as a negation.
        figures = [self.value * 100] if self.value > 0 else []
        return figures + ([self.n] if self.n else [])


class ValueRange(Entity):
    """A published range, e.g. complication 1-10% or cement 4-7 mL."""

    kind: Literal["range"]
    low: float
    high: float
    unit: Literal["fraction", "ml", "minutes", "months", "years", "cGy"] = "fraction"

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low > self.high:
            raise ValueError("low exceeds high")
        if self.unit == "fraction" and not (self.low >= 0 and self.high <= 1):
            raise ValueError("a fraction range must lie in 0..1")
        return self

    def describe(self) -> str:
        if self.unit == "fraction":
            return f"{_percent(self.low)}-{_percent(self.high)}"
        return f"{self.low:g}-{self.high:g} {self.unit}"

    def printed_figures(self) -> list[float]:
        scale = 100 if self.unit == "fraction" else 1
        return [self.low * scale, self.high * scale]


class Bound(Entity):
    """A one-sided figure: 'less than 10%', 'up to 65%'."""

    kind: Literal["bound"]
    comparator: Literal["<", "<=", ">", ">="]
    value: Fraction

    def describe(self) -> str:
        return f"{self.comparator} {_percent(self.value)}"

    def printed_figures(self) -> list[float]:
        return [self.value * 100]


class Threshold(Entity):
    """A definition, e.g. a good result is a 50% pain reduction."""

    kind: Literal["threshold"]
    value: float
    unit: Literal["fraction", "cGy", "ratio"] = "fraction"

    def describe(self) -> str:
        return _percent(self.value) if self.unit == "fraction" else f"{self.value:g} {self.unit}"

    def printed_figures(self) -> list[float]:
        return [self.value * 100 if self.unit == "fraction" else self.value]


class Quantity(Entity):
    """A plain measured quantity with a unit (e.g. mean operative time)."""

    kind: Literal["quantity"]
    value: float
    unit: Literal["ml", "minutes", "months", "years", "cGy"]

    def describe(self) -> str:
        return f"{self.value:g} {self.unit}"

    def printed_figures(self) -> list[float]:
        return [self.value]


Statistic = Annotated[
    MeanSd | Mean | Proportion | Share | ValueRange | Bound | Threshold | Quantity,
    Field(discriminator="kind"),
]


class Citation(Entity):
    seed: str = Field(pattern=r"^\d{3}_[0-9a-f]{16}\.txt$", description="Seed file name.")
    locator: str = Field(min_length=3, description="Table, section or paragraph.")
    quote: str = Field(min_length=8, description="Verbatim phrase from the seed.")
    denominator_quote: str | None = Field(
        default=None,
        description="Verbatim phrase stating the denominator, when it stands elsewhere.",
    )


# How a series counted leakage: the contract's imaging values (LeakageImaging
# without "not_assessed"), or "not_stated" when the seed does not say.
Detection = Literal["fluoroscopy", "radiograph", "ct", "not_stated"]


class BaselineEntry(Entity):
    id: str = Field(pattern=r"^s\d{3}\.[a-z0-9_.]+$")
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    figure: Figure
    procedure: BaselineProcedure
    indication: BaselineIndication
    unit: UnitOfAnalysis
    timepoint: BaselineTimepoint | None = None
    statistic: Statistic
    source: Citation
    study: str | None = Field(default=None, description="Cited study inside the seed.")
    note: str | None = Field(default=None, description="Caveats, disagreements within a seed.")
    preferred: bool = Field(
        default=False,
        description="The comparator used for this metric and cohort when several exist.",
    )
    detection: Detection | None = Field(
        default=None,
        description="Leakage figures: the imaging the series counted leakage on, as the "
        "seed states it ('not_stated' when it does not).",
    )
    detection_quote: str | None = Field(
        default=None,
        min_length=8,
        description="Verbatim phrase stating the detection method (required when stated).",
    )

    @model_validator(mode="after")
    def _detection_quoted(self) -> Self:
        stated = self.detection not in (None, "not_stated")
        if stated and self.detection_quote is None:
            raise ValueError(f"{self.id}: a stated detection method needs its detection_quote")
        if not stated and self.detection_quote is not None:
            raise ValueError(f"{self.id}: detection_quote given but no method stated")
        return self


class SeedDocument(Entity):
    file: str = Field(pattern=r"^\d{3}_[0-9a-f]{16}\.txt$")
    title: str
    kind: Literal["case_series", "review", "clinical_summary"]
    citation: str | None = Field(
        default=None,
        description="Short label a clinician can cite: authors or series, year and seed, "
        "e.g. 'Barbanti Bròdano et al., review (seed 003)'.",
    )

    @property
    def label(self) -> str:
        """The citation label, or the kind and seed number when none is recorded."""
        return self.citation or f"{self.kind.replace('_', ' ')} (seed {self.file[:3]})"


class BaselineCatalog(Entity):
    catalog_version: str = Field(pattern=r"^\d{4}\.\d{2}\.\d+$")
    seeds: tuple[SeedDocument, ...]
    baselines: tuple[BaselineEntry, ...]

    def seed(self, file: str) -> SeedDocument | None:
        return next((seed for seed in self.seeds if seed.file == file), None)

    def entry(self, entry_id: str) -> BaselineEntry | None:
        return next((entry for entry in self.baselines if entry.id == entry_id), None)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [entry.id for entry in self.baselines]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate baseline ids: {duplicates}")
        known = {seed.file for seed in self.seeds}
        unknown = sorted({e.source.seed for e in self.baselines} - known)
        if unknown:
            raise ValueError(f"baselines cite undeclared seeds: {unknown}")
        preferred: dict[tuple[object, ...], str] = {}
        for entry in self.baselines:
            if not entry.preferred:
                continue
            key = (entry.metric, entry.procedure, entry.indication, entry.unit, entry.timepoint)
            if key in preferred:
                raise ValueError(f"{entry.id} and {preferred[key]} are both preferred for {key}")
            preferred[key] = entry.id
        return self
