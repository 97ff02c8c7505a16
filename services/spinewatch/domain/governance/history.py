"""The alert history of the governance report, folded from the audit topic's records.

The alerting service writes one record per transition on `{app}-alerts`
(`domain/alerts/model.audit_record` plus `id` and `at`), at least once:
records are deduplicated by `id`. The investigation workflow's records
carry the alert's `investigation` (status, finding) and, for its steps
(`acknowledged`, `investigating`, `closed`, `chart_reset`), the step's own
record `step` (`domain/alerts/investigation.entry`: who, when, why, the
finding, a reset's `effective_after`). Every field is read with `.get`, so
records written before the workflow fold too. The free-text `reason` and
`note` are never read: the report shows the finding's category only.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from spinewatch.domain.governance.model import AlertEpisode, OperatorReset

RESET = "chart_reset"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def alert_history(
    records: Iterable[Mapping[str, Any]],
    sites: Iterable[str] = (),
    start: date | None = None,
    end: date | None = None,
) -> list[AlertEpisode]:
    """One entry per alert (fingerprint), latest first; only the sites and dates asked for.

    A record without a fingerprint or transition is skipped (it says nothing
    an episode can hold); an alert is in the period when any of its
    transitions is.
    """
    wanted = set(sites)
    seen: set[str] = set()
    by_alert: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        ident = _text(record.get("id"))
        if ident is not None:
            if ident in seen:
                continue  # a redelivered transition
            seen.add(ident)
        fingerprint, transition = _text(record.get("fingerprint")), _text(record.get("transition"))
        if fingerprint is None or transition is None:
            continue
        by_alert.setdefault(fingerprint, []).append(record)
    episodes = []
    for fingerprint, history in by_alert.items():
        episode = _episode(fingerprint, history)
        if wanted and episode.site_id not in wanted:
            continue
        days = [d for d in (_day(t[1]) for t in episode.transitions) if d is not None]
        if days and ((start and max(days) < start) or (end and min(days) > end)):
            continue
        episodes.append(episode)
    return sorted(episodes, key=lambda e: e.last_at, reverse=True)


def _episode(fingerprint: str, history: list[Mapping[str, Any]]) -> AlertEpisode:
    history = sorted(history, key=lambda r: _text(r.get("at")) or "")
    labels = history[-1].get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    investigation = finding = None
    for record in history:
        # The alerting service's audit record: the alert's investigation as
        # it stood (`investigation`), and an investigation step's own record
        # (`step`: who, when, why, finding; its note is never read here).
        held = _mapping(record.get("investigation"))
        step = _mapping(record.get("step"))
        investigation = _text(held.get("status")) or investigation
        finding = _finding(step.get("finding")) or _finding(held.get("finding")) or finding
    transitions = tuple(
        (
            _text(r.get("transition")) or "",
            _text(r.get("at")) or _text(r.get("starts_at")) or "",
            _text(_mapping(r.get("step")).get("by")) or _text(r.get("acknowledged_by")),
        )
        for r in history
    )
    return AlertEpisode(
        fingerprint=fingerprint,
        site_id=_text(labels.get("site")) or fingerprint.split(".", 1)[0],
        metric=_text(labels.get("metric")) or "",
        direction=_text(labels.get("direction")) or "",
        severity=_text(history[-1].get("severity")) or "",
        status=transitions[-1][0],
        first_at=transitions[0][1],
        last_at=transitions[-1][1],
        investigation_status=investigation,
        finding=finding,
        transitions=transitions,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _finding(value: Any) -> str | None:
    """The finding's category (a closing's; its note is never read)."""
    return _text(value)


def operator_resets(
    records: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, str], list[OperatorReset]]:
    """Resets recorded on the audit topic, per (site, metric, direction) chart."""
    found: dict[tuple[str, str, str], list[OperatorReset]] = {}
    seen: set[str] = set()
    for record in records:
        if record.get("transition") != RESET:
            continue
        ident = _text(record.get("id"))
        if ident is not None:
            if ident in seen:
                continue
            seen.add(ident)
        labels = record.get("labels")
        labels = labels if isinstance(labels, Mapping) else {}
        chart = (
            _text(labels.get("site")) or "",
            _text(labels.get("metric")) or "",
            _text(labels.get("direction")) or "",
        )
        # The chart restarts after `effective_after` (the closing's time unless
        # the investigator named one); the reason may be free text: only the
        # date is shown.
        on = _day(_text(_mapping(record.get("step")).get("effective_after")))
        on = on or _day(_text(record.get("at")))
        if on is not None:
            found.setdefault(chart, []).append(OperatorReset(on))
    return found
