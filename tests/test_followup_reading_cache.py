"""The follow-up book's cached readings equal a fresh computation at every read.

`FollowupBook.summaries` and `.lost` reuse a site's last result while its
plans (version) and as-of instant are unchanged (issue 20: they were ~60% of
a /metrics rendering). Here random plan changes (new procedures, follow-ups
received, deaths, retractions, moves in time and between sites) drive a
book; after each refresh, and at other as-of instants, every reading is
compared, exactly (same floats), with `summarise` / `lost_tallies` over the
site's plans in the book's order, computed afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from spinewatch.domain.followup import book as book_module
from spinewatch.domain.followup.book import CompletenessDesign, FollowupBook
from spinewatch.domain.followup.completeness import (
    ProcedurePlan,
    TimepointSummary,
    lost_tallies,
    summarise,
)
from spinewatch.domain.followup.schedule import DAY_US, SCHEDULABLE, schedule_windows
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally

SITES = ["north", "south", "east"]
# Every schedulable window: Clark's C then sums fractions of days over several horizons.
DESIGN = CompletenessDesign(schedule_windows(SCHEDULABLE), 0.8, 2.0, 60.0)
HOUR_US = DAY_US // 24

Change = tuple[bytes, ProcedurePlan | None]


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[list[Change], list[int]]]:
    """Batches of plan changes, each with as-of offsets (days back from the clock) to read at."""
    ids = [bytes([n]) * 16 for n in range(draw(st.integers(1, 30)))]
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        batch: list[Change] = []
        for _ in range(draw(st.integers(0, 6))):  # an empty batch: a read with nothing new
            procedure_id = draw(st.sampled_from(ids))
            if draw(st.integers(0, 9)) == 0:
                batch.append((procedure_id, None))  # retracted
                continue
            day = draw(st.integers(0, 400))
            at = day * DAY_US + draw(st.integers(0, 23)) * HOUR_US  # fractions of a day
            received = {
                timepoint: at + draw(st.sampled_from([1, 2, 6, 9, 30, 100, 200, 380])) * DAY_US
                for timepoint in SCHEDULABLE
                if draw(st.booleans())
            }
            plan = ProcedurePlan(
                draw(st.sampled_from(SITES)), "pvp", draw(st.sampled_from(["hemangioma", "metastasis"])),
                draw(st.sampled_from([None, "op-1"])), at,
                draw(st.sampled_from([None, 0, 7000])), received, draw(st.integers(0, 9)) == 0,
            )  # fmt: skip
            batch.append((procedure_id, plan))
        steps.append((batch, draw(st.lists(st.integers(0, 200), max_size=2))))
    return steps


def _fresh_plans(book: FollowupBook) -> dict[str, list[ProcedurePlan]]:
    """Each site's plans in the book's order, from its plans alone (no cache, no index)."""
    by_site: dict[str, list[ProcedurePlan]] = {}
    for plan in book.plans.values():
        by_site.setdefault(plan.site_id, []).append(plan)
    return by_site


def _fresh_summaries(
    book: FollowupBook, as_of: Callable[[int], int] | None
) -> list[tuple[str, dict[str, TimepointSummary]]]:
    found = []
    for site_id, plans in sorted(_fresh_plans(book).items()):
        clock = book.clocks[site_id]
        found.append((site_id, summarise(plans, DESIGN.windows, as_of(clock) if as_of else clock)))
    return found


def _fresh_lost(book: FollowupBook) -> dict[AggregateKey, Tally]:
    found: dict[AggregateKey, Tally] = {}
    for site_id, plans in _fresh_plans(book).items():
        found |= lost_tallies(plans, DESIGN.windows, book.clocks[site_id])
    return found


def _back(days: int) -> Callable[[int], int]:
    return lambda clock: clock - days * DAY_US


@settings(max_examples=200, deadline=None)
@given(_steps())
def test_cached_summaries_and_lost_tallies_equal_a_fresh_computation_at_every_read(
    steps: list[tuple[list[Change], list[int]]],
) -> None:
    book = FollowupBook(DESIGN)
    records: dict[bytes, ProcedurePlan] = {}
    # Plans stand in for records here: the readings are under test, not `plan_of`.
    with mock.patch.object(book_module, "plan_of", lambda plan: plan):
        for batch, offsets in steps:
            for procedure_id, plan in batch:
                if plan is None:
                    records.pop(procedure_id, None)
                else:
                    records[procedure_id] = plan
            book.track(records, [procedure_id for procedure_id, _ in batch])  # type: ignore[arg-type]
            book.refresh()
            # Twice each: the second read is the cached one.
            for _ in range(2):
                assert list(book.summaries()) == _fresh_summaries(book, None)
                assert book.lost() == _fresh_lost(book)
            for days in offsets:  # another as-of (the weekly report, a report's end date)
                assert list(book.summaries(_back(days))) == _fresh_summaries(book, _back(days))
                assert list(book.summaries()) == _fresh_summaries(book, None)
            sites = set(SITES[:1])
            assert list(book.summaries(sites=sites)) == [
                (s, found) for s, found in _fresh_summaries(book, None) if s in sites
            ]


def test_a_read_recomputes_only_the_sites_whose_plans_changed() -> None:
    """The cache is used: a change at one site recomputes that site alone."""
    book = FollowupBook(DESIGN)
    records = {
        bytes([n]) * 16: ProcedurePlan(
            SITES[n % 3], "pvp", "hemangioma", None, n * DAY_US, 7000, {}, False
        )
        for n in range(30)
    }
    calls: list[str] = []

    def counting_summarise(plans: list[ProcedurePlan], *args: object) -> object:
        plans = list(plans)
        calls.append(plans[0].site_id)
        return summarise(plans, *args)  # type: ignore[arg-type]

    def counting_lost(plans: list[ProcedurePlan], *args: object) -> object:
        plans = list(plans)
        calls.append(plans[0].site_id)
        return lost_tallies(plans, *args)  # type: ignore[arg-type]

    with (
        mock.patch.object(book_module, "plan_of", lambda plan: plan),
        mock.patch.object(book_module, "summarise", counting_summarise),
        mock.patch.object(book_module, "lost_tallies", counting_lost),
    ):
        book.track(records, list(records))  # type: ignore[arg-type]
        book.refresh()
        list(book.summaries())
        book.lost()
        assert sorted(calls) == sorted(SITES * 2)
        calls.clear()
        list(book.summaries())
        book.lost()
        assert calls == []  # nothing changed: nothing recomputed
        moved = bytes([1]) * 16  # a "south" procedure receives a follow-up
        records[moved] = ProcedurePlan(
            "south", "pvp", "hemangioma", None, DAY_US, 7000, {"month_1": 31 * DAY_US}, False
        )
        book.track(records, [moved])  # type: ignore[arg-type]
        book.refresh()
        list(book.summaries())
        book.lost()
        assert calls == ["south", "south"]
