"""Per procedure: its scheduled follow-ups; per site and timepoint: completeness and Clark's C.

A procedure's follow-up plan is read from its record (`plan_of`): when it
was done, which scheduled timepoints were recorded and when, and whether
the patient died (censoring). From the plans of a site and an as-of
instant, `summarise` counts each timepoint's follow-ups by state and gives

* completeness: received / closed, over the follow-ups whose window and
  grace have closed (one received late counts as received: it was
  collected, and a site that catches up is complete again);
* Clark's C (Clark et al., Lancet 2002;359:1309-10): observed over
  potential follow-up time. Per patient, the potential time is from the
  procedure to the as-of instant, capped at the timepoint's nominal day
  (the horizon); the observed time is the nominal day of the latest
  scheduled timepoint received, capped the same way. A censored (dead)
  patient's potential time ends at their last contact. C counts how much
  of the follow-up that could have been seen was seen, so a site that
  loses patients early scores lower than one that loses them late, which
  the ratio of received follow-ups does not show.

`lost_tallies` gives, per cohort, the lost follow-ups the pessimistic
figures add (see `pessimistic`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.followup.schedule import DAY_US, FollowupState, Window, state_of
from spinewatch.domain.outcomes.contribution import AggregateKey, CohortKey, Tally
from spinewatch.domain.outcomes.facts import ComplicationFact, FollowupFact, RetractionFact
from spinewatch.domain.outcomes.records import ProcedureRecord

_DEATH = "death"


@dataclass(frozen=True, slots=True)
class ProcedurePlan:
    """What completeness needs of one procedure's record."""

    site_id: str
    procedure_type: str
    indication: str
    operator_ref: str | None
    procedure_us: int  # clinical time of the procedure
    pre_vas: int | None  # thousandths
    received: Mapping[str, int]  # timepoint -> when first recorded (epoch us)
    censored: bool  # a death is recorded

    @property
    def latest_us(self) -> int:
        """The latest clinical instant the record shows (it moves the clock)."""
        return max(self.procedure_us, max(self.received.values(), default=self.procedure_us))


def plan_of(record: ProcedureRecord) -> ProcedurePlan | None:
    """None until the procedure is known, or once it was retracted."""
    view = record.live()
    procedure = view.procedure
    if procedure is None:
        return None
    retracted = {f.target_event_id for f in record.facts if type(f) is RetractionFact}
    received: dict[str, int] = {}
    censored = False
    for fact in record.facts:
        if fact.event_id in retracted:
            continue
        if type(fact) is FollowupFact:
            # The first recording of a timepoint is when it was received; a
            # later correction does not make it late.
            first = received.get(fact.timepoint)
            if first is None or fact.recorded_at_us < first:
                received[fact.timepoint] = fact.recorded_at_us
        elif type(fact) is ComplicationFact and fact.category == _DEATH:
            censored = True
    return ProcedurePlan(
        procedure.site_id,
        procedure.procedure_type,
        procedure.indication,
        procedure.operator_ref,
        procedure.occurred_at_us,
        procedure.pre_vas,
        received,
        censored,
    )


@dataclass(slots=True)
class TimepointSummary:
    """One site's follow-ups at one timepoint, as of an instant."""

    timepoint: str
    counts: dict[FollowupState, int] = field(default_factory=dict)
    closed: int = 0  # window and grace closed (censored excluded)
    closed_received: int = 0  # of which received (on time or late)
    observed_days: float = 0.0  # Clark's C numerator
    potential_days: float = 0.0  # Clark's C denominator

    @property
    def completeness(self) -> float | None:
        return self.closed_received / self.closed if self.closed else None

    @property
    def clarks_c(self) -> float | None:
        return self.observed_days / self.potential_days if self.potential_days > 0 else None


def summarise(
    plans: Iterable[ProcedurePlan], windows: tuple[Window, ...], as_of_us: int
) -> dict[str, TimepointSummary]:
    """Per scheduled timepoint: counts by state, completeness and Clark's C."""
    summaries = {w.timepoint: TimepointSummary(w.timepoint) for w in windows}
    for plan in plans:
        if plan.procedure_us > as_of_us:
            continue  # not done yet as of then
        elapsed = as_of_us - plan.procedure_us
        last_contact = 0  # nominal day of the latest timepoint received
        for window in windows:
            summary = summaries[window.timepoint]
            received = plan.received.get(window.timepoint)
            state = state_of(window, plan.procedure_us, received, as_of_us, censored=plan.censored)
            summary.counts[state] = summary.counts.get(state, 0) + 1
            received_now = state in ("received", "received_late")
            if received_now:
                last_contact = window.nominal_day
            if state != "censored" and elapsed >= window.overdue_day * DAY_US:
                summary.closed += 1
                summary.closed_received += received_now
            horizon = window.nominal_day * DAY_US
            potential = min(elapsed, horizon)
            observed = min(last_contact * DAY_US, potential)
            if plan.censored:
                potential = observed  # follow-up ended with the patient's death
            summary.observed_days += observed / DAY_US
            summary.potential_days += potential / DAY_US
    return summaries


# --- the pessimistic figures ----------------------------------------------------


# A lost follow-up of a patient with a pre-procedure VAS counts as no relief
# (change 0); of a patient with a pre-procedure VAS above 0 (a responder can
# be defined), as a non-responder.
def vas_change_lost(timepoint: str) -> str:
    return f"vas_change_lost.{timepoint}"


def responder_eligible_lost(timepoint: str) -> str:
    return f"responder_eligible_lost.{timepoint}"


def lost_tallies(
    plans: Iterable[ProcedurePlan], windows: tuple[Window, ...], as_of_us: int
) -> dict[AggregateKey, Tally]:
    """Per cohort and operator: lost follow-ups with a pre-procedure VAS, by timepoint."""
    tallies: dict[AggregateKey, Tally] = {}
    for plan in plans:
        if plan.pre_vas is None:
            continue  # no paired change to impute
        for window in windows:
            received = plan.received.get(window.timepoint)
            state = state_of(window, plan.procedure_us, received, as_of_us, censored=plan.censored)
            if state != "lost":
                continue
            cohort = CohortKey(
                plan.site_id, ProcedureType(plan.procedure_type), Indication(plan.indication)
            )
            tally = tallies.setdefault((cohort, plan.operator_ref), {})
            name = vas_change_lost(window.timepoint)
            tally[name] = tally.get(name, 0) + 1
            if plan.pre_vas > 0:
                name = responder_eligible_lost(window.timepoint)
                tally[name] = tally.get(name, 0) + 1
    return tallies
