"""Sentinel events of a partition: found, withdrawn when their cause goes, found again.

A sentinel is one procedure-related pulmonary cement embolism, death or
neurological deficit: catastrophic, so every case pages and is reviewed
(domain/alerts/policy.py gives the seeds' figures for each).
Its identity is (site, category, procedure, generation), where the
generation counts the procedure-related reports of that category that were
retracted. The record is a grow-only set of facts, so a retraction is for
good and the generation is a pure function of the record: a worker rebuilt
from the changelog derives the same identities as the one that paged.

- A report retracted with no other report of the category left: the page
  is withdrawn (`retracted`).
- Reported again after that (a new event, so one more retracted report
  behind it): a new generation, a new sentinel id, a new page. A correction
  (retraction plus new report) is therefore a withdrawal and a new page
  carrying the corrected details, unless both land between two refreshes.
- Every version of the procedure retracted: withdrawn (`procedure_voided`).
  A void is not for good (a new version of the procedure reinstates it, and
  the fact set cannot tell a void-then-reinstate from a correction), so its
  withdrawal id carries how many procedure versions were retracted, and the
  alerting service pages a reinstated sentinel again.
- A correction that moves the procedure to another site: withdrawn
  (`procedure_corrected`) and paged under the new site.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from spinewatch.domain.drift.design import Stratum
from spinewatch.domain.outcomes import packed
from spinewatch.domain.outcomes.contribution import Contribution, patients_with
from spinewatch.domain.outcomes.facts import ComplicationFact, ProcedureFact, RetractionFact
from spinewatch.domain.outcomes.partition import Records
from spinewatch.domain.outcomes.records import ProcedureRecord

# Catastrophic procedure-related complications: every
# case is paged (domain/alerts/policy.SENTINEL_METRICS names their rates).
SENTINEL_CATEGORIES = ("pulmonary_cement_embolism", "death", "neurological_deficit")
_SENTINEL_TALLIES = tuple((c, patients_with(c)) for c in SENTINEL_CATEGORIES)
_SENTINEL_NAMES = tuple(name for _, name in _SENTINEL_TALLIES)
_SENTINEL_TEXTS = tuple(packed.encoded_text(c) for c in SENTINEL_CATEGORIES)

Reason = Literal["retracted", "procedure_voided", "procedure_corrected"]


@dataclass(frozen=True, slots=True)
class SentinelCase:
    site_id: str
    category: str
    procedure_id: bytes  # hashed into the message id, never sent
    occurred_at_us: int
    stratum: Stratum
    generation: int = 0


@dataclass(frozen=True, slots=True)
class SentinelWithdrawal:
    site_id: str
    category: str
    procedure_id: bytes  # hashed into the message ids, never sent
    generation: int  # of the sentinel withdrawn
    reason: Reason
    # Procedure versions retracted when voided: a later void of a reinstated
    # procedure is another withdrawal, with another id.
    voided_versions: int = 0


@dataclass(frozen=True, slots=True)
class SentinelHistory:
    """What a record says of its sentinel complications, retractions applied."""

    site_id: str | None  # of the latest recorded procedure version, retracted or not
    voided: bool  # a procedure version was recorded, and every one is retracted
    retracted_versions: int
    live: frozenset[str]  # categories with an unretracted procedure-related report
    retracted: Mapping[str, int]  # per category, procedure-related reports retracted


def sentinel_history(record: ProcedureRecord) -> SentinelHistory:
    retracted_ids = {f.target_event_id for f in record.facts if type(f) is RetractionFact}
    latest: ProcedureFact | None = None
    versions = retracted_versions = 0
    live: set[str] = set()
    retracted: Counter[str] = Counter()
    for fact in record.facts:
        if type(fact) is ProcedureFact:
            versions += 1
            retracted_versions += fact.event_id in retracted_ids
            if latest is None or (fact.recorded_at_us, fact.event_id) > (
                latest.recorded_at_us,
                latest.event_id,
            ):
                latest = fact
        elif (
            type(fact) is ComplicationFact
            and fact.procedure_related
            and fact.category in SENTINEL_CATEGORIES
        ):
            if fact.event_id in retracted_ids:
                retracted[fact.category] += 1
            else:
                live.add(fact.category)
    return SentinelHistory(
        site_id=None if latest is None else latest.site_id,
        voided=versions > 0 and versions == retracted_versions,
        retracted_versions=retracted_versions,
        live=frozenset(live),
        retracted=retracted,
    )


def ended(procedure_id: bytes, history: SentinelHistory) -> Iterator[SentinelWithdrawal]:
    """Every withdrawal a record implies: what a rebuilt worker announces again."""
    site = history.site_id
    if site is None:
        return
    for category in SENTINEL_CATEGORIES:
        for generation in range(history.retracted.get(category, 0)):
            yield SentinelWithdrawal(site, category, procedure_id, generation, "retracted")
        if history.voided and category in history.live:
            yield SentinelWithdrawal(
                site,
                category,
                procedure_id,
                history.retracted.get(category, 0),
                "procedure_voided",
                history.retracted_versions,
            )


def _has_sentinel_retraction(record: ProcedureRecord) -> bool:
    # One loop, no generators: a rebuild asks this of every record it holds
    # (two any() over generators were most of drift.rebuild at 100k procedures).
    retraction = sentinel = False
    for fact in record.facts:
        if type(fact) is RetractionFact:
            retraction = True
        elif type(fact) is ComplicationFact and fact.category in SENTINEL_CATEGORIES:
            sentinel = True
    return retraction and sentinel


@dataclass(slots=True)
class SentinelWatch:
    """Per procedure, the sentinel generations paged and not withdrawn."""

    found: list[SentinelCase | SentinelWithdrawal] = field(default_factory=list)
    # procedure -> category -> (generation, site) of the live sentinel.
    _live: dict[bytes, dict[str, tuple[int, str]]] = field(default_factory=dict)

    def follow(
        self,
        procedure_id: bytes,
        contribution: Contribution | None,
        record: ProcedureRecord | None,
    ) -> None:
        """Compare the procedure's sentinels now with those found before."""
        tally = None if contribution is None else contribution.tally
        held = self._live.get(procedure_id)
        if held is None and (tally is None or not any(map(tally.get, _SENTINEL_NAMES))):
            return  # nearly every procedure: no sentinel complication, none before
        known = held or {}
        history = None if record is None else sentinel_history(record)
        now: dict[str, tuple[int, str]] = {}
        if contribution is not None:
            site = contribution.cohort.site_id
            for category, name in _SENTINEL_TALLIES:
                if contribution.tally.get(name):
                    generation = history.retracted.get(category, 0) if history else 0
                    now[category] = (generation, site)
        self._withdraw(procedure_id, known, now, voided=contribution is None, history=history)
        if contribution is not None:
            self.found.extend(
                SentinelCase(
                    site,
                    category,
                    procedure_id,
                    contribution.occurred_at_us,
                    contribution.cohort.stratum,
                    generation,
                )
                for category, (generation, site) in sorted(now.items())
                if known.get(category) != (generation, site)
            )
        if now:
            self._live[procedure_id] = now
        else:
            self._live.pop(procedure_id, None)

    def _withdraw(
        self,
        procedure_id: bytes,
        known: Mapping[str, tuple[int, str]],
        now: Mapping[str, tuple[int, str]],
        *,
        voided: bool,
        history: SentinelHistory | None,
    ) -> None:
        for category, (generation, site) in sorted(known.items()):
            current = now.get(category)
            if current == (generation, site):
                continue
            reason: Reason
            if voided:
                reason = "procedure_voided"
            elif current is not None and current[1] != site:
                reason = "procedure_corrected"
            else:
                reason = "retracted"
            versions = history.retracted_versions if history and reason != "retracted" else 0
            self.found.append(
                SentinelWithdrawal(site, category, procedure_id, generation, reason, versions)
            )

    def recall(self, records: Records) -> None:
        """After a rebuild: every withdrawal the records imply, again (ids dedupe).

        A withdrawal queued but not yet published when the previous owner
        stopped is not lost. One pass over the packed records: only those
        whose bytes may hold a retraction and a sentinel category are decoded
        (decoding every record cost ~3.7 s CPU at 1,000,000 procedures).
        """
        for procedure_id, raw in records.packed_items():
            if not packed.may_hold_retraction(raw) or not any(
                text in raw for text in _SENTINEL_TEXTS
            ):
                continue  # holds no retraction, or no sentinel complication
            record = ProcedureRecord(packed.unpack(raw))
            if _has_sentinel_retraction(record):
                self.found.extend(ended(procedure_id, sentinel_history(record)))

    def take(self) -> list[SentinelCase | SentinelWithdrawal]:
        taken, self.found = self.found, []
        return taken
