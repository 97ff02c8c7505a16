"""The alert of a silent site: fires on `drift.silence` silent, resolves on resumed.

One alert per site (fingerprint `silence.<site>`), a warning
(`policy.py`): a site whose stream stopped is not harm to a patient, but
every chart of that site looks in control while it is silent, which the
quality team must know within the working day. Like the other alerts it
names the site and times, never a patient. Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime

from spinewatch.contracts.drift import DriftSilence
from spinewatch.domain.alerts.model import Alert, rfc3339
from spinewatch.domain.alerts.policy import severity_of

SILENCE_ALERT_NAME = "SpinewatchSiteSilent"
SILENCE_METRIC = "stream_silence"


def silence_fingerprint(site_id: str) -> str:
    return f"silence.{site_id}"


def alert_from_silence(message: DriftSilence, now: datetime, dashboard_url: str) -> Alert:
    """The firing alert of a `silent` message."""
    severity = severity_of(SILENCE_METRIC)
    site = message.site_id
    last = rfc3339(message.last_event_at) if message.last_event_at else "unknown"
    gap, threshold = message.usual_gap_s or 0.0, message.threshold_s or 0.0
    annotations = {
        "summary": f"{site}: no events received since {last}",
        "observed_vs_baseline": (
            f"silent longer than {_duration(threshold)}: usually one arrival every "
            f"{_duration(gap)} (over the last {message.arrivals} arrivals)"
        ),
        "citation": (
            f"stream silence rule: max({message.multiple:g} x usual gap, floor) without an "
            "event (domain/drift/silence.py); every chart of the site looks in control "
            "meanwhile"
        ),
        "change_point": f"last event received {last}",
        "dashboard": f"{dashboard_url.rstrip('/')}?var-site={site}",
    }
    return Alert(
        fingerprint=silence_fingerprint(site),
        status="firing",
        severity=severity,
        labels={"alertname": SILENCE_ALERT_NAME, "severity": severity, "site": site},
        annotations=annotations,
        signal_id=str(message.silence_id),
        starts_at=rfc3339(now),
    )


def _duration(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.1f} s"
