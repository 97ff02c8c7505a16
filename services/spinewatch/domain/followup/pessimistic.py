"""VAS change and responder rate under the pessimistic assumption for lost follow-ups.

The complete-case figures (`report_metrics`: vas_change, responder_rate)
are computed over the patients who came back. Non-responders to follow-up
have had worse early outcomes in some registries and random attrition in
others, so the report sets a pessimistic figure next to each: a lost
follow-up (see `schedule`) counts as a non-responder, and as no relief
(VAS change 0) in the mean change. Overdue follow-ups are not imputed yet:
they may still come. Change 0 is pessimistic about relief, the outcome the
seeds report; a cohort whose returning patients got worse on average is
pulled towards 0 by it, not further down.

The imputed zeros add to the count of a VAS series and to nothing else,
so the pessimistic series is the complete-case one with n raised by the
lost patients. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from spinewatch.domain.followup.completeness import responder_eligible_lost, vas_change_lost
from spinewatch.domain.followup.schedule import SCHEDULABLE
from spinewatch.domain.outcomes.contribution import Tally, vas_moments


def responder_eligible_pessimistic(timepoint: str) -> str:
    return f"responder_eligible_pessimistic.{timepoint}"


def vas_change_pessimistic_series(timepoint: str) -> str:
    return f"vas_change_pessimistic.{timepoint}"


def with_pessimistic(tally: Mapping[str, int]) -> Tally:
    """The tally with the pessimistic denominators and VAS series added."""
    out = dict(tally)
    for timepoint in SCHEDULABLE:
        eligible = tally.get(f"responder_eligible.{timepoint}", 0)
        lost_eligible = tally.get(responder_eligible_lost(timepoint), 0)
        if eligible + lost_eligible:
            out[responder_eligible_pessimistic(timepoint)] = eligible + lost_eligible
        n, total, squares = vas_moments(f"vas_change.{timepoint}")
        lost = tally.get(vas_change_lost(timepoint), 0)
        if tally.get(n, 0) + lost:
            pn, ptotal, psquares = vas_moments(vas_change_pessimistic_series(timepoint))
            out[pn] = tally.get(n, 0) + lost
            out[ptotal] = tally.get(total, 0)
            out[psquares] = tally.get(squares, 0)
    return out
