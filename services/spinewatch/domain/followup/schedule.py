"""When each follow-up is due, and the state a scheduled follow-up is in.

A site is expected to collect some timepoints (a setting); for each, a
window in days since the procedure. The state of one scheduled follow-up
at an as-of instant (`state_of`):

    pending  -> due       the window opened (as of >= procedure + open)
    due      -> received  a follow-up for the timepoint was recorded
    due      -> overdue   the window and its grace closed without one
    overdue  -> lost      still missing at the lost limit
    overdue | lost -> received (late)  it was recorded after all

A patient with a recorded death is censored: a follow-up not received is
not expected of them (their death day is not in the facts, so every
outstanding follow-up of theirs is left out, not only the later ones).

The windows. post_procedure follows seed 000 ("24 to 72 hours"): days 1
to 3. The others are conventional visit windows of a follow-up clinic
(about +-1/4 of the interval, no seed gives them): they are settings of
this module, documented in the README's table, not literature figures.
Grace is the time a site's records may lag behind the visit (the demo
records a visit up to 3 days later); lost is the point past which a visit
no longer measures that timepoint. `final` and `other` have no fixed day
and are never scheduled.

Pure: no I/O, no clock (the as-of instant is passed in).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from spinewatch.contracts.vocabulary import FollowupTimepoint

DAY_US = 86_400 * 1_000_000

FollowupState = Literal[
    "pending", "due", "received", "received_late", "overdue", "lost", "censored"
]


@dataclass(frozen=True, slots=True)
class Window:
    """A timepoint's window, in days since the procedure."""

    timepoint: str
    nominal_day: int  # the visit's target day: the follow-up time it observes (Clark's C)
    opens_day: int
    closes_day: int
    grace_days: int  # after closing: overdue once this has passed too
    lost_day: int  # days since the procedure after which a missing visit is lost

    @property
    def overdue_day(self) -> int:
        return self.closes_day + self.grace_days

    def __post_init__(self) -> None:
        if not 0 <= self.opens_day <= self.nominal_day <= self.closes_day:
            raise ValueError(f"{self.timepoint}: the nominal day must lie in its window")
        if not self.overdue_day < self.lost_day:
            raise ValueError(f"{self.timepoint}: lost must come after overdue")


WINDOWS: dict[str, Window] = {
    w.timepoint: w
    for w in (
        # Seed 000: post-procedure VAS "24 to 72 hours" after the procedure.
        Window("post_procedure", 2, 1, 3, 4, 30),
        Window("week_1", 7, 5, 10, 7, 30),
        Window("month_1", 30, 21, 42, 14, 90),
        Window("month_3", 91, 75, 105, 30, 180),
        Window("month_6", 182, 150, 210, 30, 365),
        Window("month_12", 365, 330, 400, 60, 545),
    )
}

SCHEDULABLE = tuple(WINDOWS)
# What the demo's synthetic sites send (demo/synthetic/events.py `_followups`):
# post_procedure and week_1 at fixed days, `final` at a variable day.
DEFAULT_SCHEDULE = (FollowupTimepoint.POST_PROCEDURE.value, FollowupTimepoint.WEEK_1.value)


def schedule_windows(timepoints: Iterable[str]) -> tuple[Window, ...]:
    """The windows of a schedule, in the order of their nominal day."""
    windows = []
    for timepoint in timepoints:
        window = WINDOWS.get(timepoint)
        if window is None:
            raise ValueError(
                f"{timepoint!r} has no fixed window; schedulable: {', '.join(SCHEDULABLE)}"
            )
        windows.append(window)
    return tuple(sorted(windows, key=lambda w: w.nominal_day))


def state_of(
    window: Window,
    procedure_us: int,
    received_us: int | None,
    as_of_us: int,
    *,
    censored: bool = False,
) -> FollowupState:
    """The state of one scheduled follow-up as of `as_of_us` (epoch microseconds).

    `received_us` is when the follow-up was recorded; one recorded after the
    as-of instant was not yet received then.
    """
    if received_us is not None and received_us <= as_of_us:
        late = received_us >= procedure_us + window.overdue_day * DAY_US
        return "received_late" if late else "received"
    if censored:
        return "censored"
    elapsed = as_of_us - procedure_us
    if elapsed < window.opens_day * DAY_US:
        return "pending"
    if elapsed < window.overdue_day * DAY_US:
        return "due"
    if elapsed < window.lost_day * DAY_US:
        return "overdue"
    return "lost"


def closes_at(window: Window, procedure_us: int) -> int:
    """When the follow-up's outcome is settled: window and grace closed."""
    return procedure_us + window.overdue_day * DAY_US
