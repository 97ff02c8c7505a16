"""Proof that every catalog figure stands in its seed document.

Two checks per entry, both against the seed text itself:

1. the quote (and denominator quote) occurs verbatim in the seed, after
   folding whitespace and joining words hyphenated across line breaks (the
   seeds are PDF extractions);
2. every figure the statistic claims (mean, SD, numerator, percentage, range
   ends...) is printed in those quotes, so a number cannot be typed into the
   catalog that the quoted passage does not state. A zero count needs a
   negation in the quote ("No pulmonary embolism ever occurred"), a count
   equal to its denominator an "all".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from spinewatch.baselines.model import (
    BaselineCatalog,
    BaselineEntry,
    MeanSd,
    Proportion,
    Share,
)

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "twenty-six": 26, "twenty six": 26,
}  # fmt: skip
_NEGATIONS = re.compile(r"\b(no|none|not|never|without|wasn.t)\b", re.IGNORECASE)
_ALL = re.compile(r"\b(all|every|always)\b", re.IGNORECASE)
# "118,000" is a thousands separator; "9,2 %" (seed 003) a decimal comma.
_THOUSANDS = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?")


@dataclass(frozen=True, slots=True)
class ProvenanceProblem:
    entry_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.entry_id}: {self.problem}"


def fold(text: str) -> str:
    """Whitespace folded to single spaces; the comparison form of seed text."""
    return " ".join(text.split())


def dehyphenate(text: str) -> str:
    """Join words split across a line break ('hem-\\nangioma' -> 'hemangioma')."""
    return re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text)


class SeedLibrary:
    """The seed documents, read once and kept in comparison form."""

    def __init__(self, seeds_dir: Path) -> None:
        self.seeds_dir = seeds_dir
        self._texts: dict[str, tuple[str, str]] = {}

    def forms(self, seed: str) -> tuple[str, str]:
        if seed not in self._texts:
            raw = (self.seeds_dir / seed).read_text(encoding="utf-8")
            self._texts[seed] = (fold(raw), fold(dehyphenate(raw)))
        return self._texts[seed]

    def contains(self, seed: str, phrase: str) -> bool:
        needle = fold(phrase)
        return any(needle in form for form in self.forms(seed))


def verify_catalog(catalog: BaselineCatalog, seeds_dir: Path) -> list[ProvenanceProblem]:
    """Every problem found; an empty list means the whole catalog is traceable."""
    library = SeedLibrary(seeds_dir)
    problems: list[ProvenanceProblem] = []
    for seed in catalog.seeds:
        if not (seeds_dir / seed.file).is_file():
            problems.append(ProvenanceProblem(seed.file, f"seed file missing in {seeds_dir}"))
    missing = {p.entry_id for p in problems}
    for entry in catalog.baselines:
        if entry.source.seed not in missing:
            problems.extend(_verify_entry(entry, library))
    return problems


def _verify_entry(entry: BaselineEntry, library: SeedLibrary) -> Iterable[ProvenanceProblem]:
    source = entry.source
    quotes = [source.quote] + ([source.denominator_quote] if source.denominator_quote else [])
    if entry.detection_quote is not None and not library.contains(
        source.seed, entry.detection_quote
    ):
        yield ProvenanceProblem(
            entry.id, f"detection quote not found in {source.seed}: {entry.detection_quote!r}"
        )
    for quote in quotes:
        if not library.contains(source.seed, quote):
            yield ProvenanceProblem(entry.id, f"quote not found in {source.seed}: {quote!r}")
    for problem in _figures_not_in_quotes(entry, " ".join(quotes)):
        yield ProvenanceProblem(entry.id, problem)


def _printed_numbers(text: str) -> list[float]:
    numbers = [float(match.replace(",", "")) for match in _THOUSANDS.findall(text)]
    text = _THOUSANDS.sub(" ", text)
    numbers += [float(match.replace(",", ".")) for match in _NUMBER.findall(text)]
    lowered = text.lower()
    numbers += [
        value for word, value in _NUMBER_WORDS.items() if re.search(rf"\b{word}\b", lowered)
    ]
    return numbers


def _printed(value: float, numbers: list[float]) -> bool:
    # Seeds round to one decimal at most; allow that rounding, not more.
    return any(abs(value - n) <= 0.051 for n in numbers)


def _printed_pair(mean: float, sd: float, text: str) -> bool:
    for left, right in re.findall(r"(\d+(?:[.,]\d+)?)\s*±\s*(\d+(?:[.,]\d+)?)", text):
        if _printed(mean, [float(left.replace(",", "."))]) and _printed(
            sd, [float(right.replace(",", "."))]
        ):
            return True
    return False


def _figures_not_in_quotes(entry: BaselineEntry, quoted: str) -> list[str]:
    numbers = _printed_numbers(quoted)
    problems = _count_problems(entry, quoted, numbers)
    stat = entry.statistic
    if isinstance(stat, MeanSd) and not _printed_pair(stat.mean, stat.sd, quoted):
        # Mean and SD must stand together as printed ("7.4 ± 1.6"), so an SD
        # cannot be borrowed from a neighbouring column of a table.
        problems.append(f"'{stat.mean:g} ± {stat.sd:g}' is not printed as a pair in the quote")
    problems += [
        f"figure {value:g} is not printed in the quoted text"
        for value in stat.printed_figures()
        if not _printed(value, numbers)
    ]
    return problems


def _count_problems(entry: BaselineEntry, quoted: str, numbers: list[float]) -> list[str]:
    """A zero count must be stated as a negation, a complete count as 'all' or the number."""
    stat = entry.statistic
    if isinstance(stat, Share) and stat.value == 0 and not _NEGATIONS.search(quoted):
        return ["zero share but the quote states no negation"]
    if not isinstance(stat, Proportion):
        return []
    if stat.numerator == 0 and not _NEGATIONS.search(quoted):
        return ["zero count but the quote states no negation"]
    if (
        stat.numerator == stat.denominator
        and not _printed(stat.numerator, numbers)
        and not _ALL.search(quoted)
    ):
        return ["count equals denominator but the quote states neither it nor 'all'"]
    return []
