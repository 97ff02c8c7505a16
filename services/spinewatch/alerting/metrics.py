"""The alerting service's own metrics (the supervisor and stream health add theirs).

Labels are bounded: severities, receiver names, decisions, error types and
refusal reasons. No alert fingerprint, no user, no free text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from spinewatch.adapters.message_signing import SIGNATURE_FAULTS
from spinewatch.runtime.failures import export_at_zero


class AlertingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.firing = Gauge(
            "spinewatch_alerts_firing",
            "Alerts firing, by severity.",
            ["severity"],
            registry=registry,
        )
        self.sent = Counter(
            "spinewatch_notifications_sent", "Deliveries a receiver accepted.", ["receiver"],
            registry=registry,
        )  # fmt: skip
        self.failed = Counter(
            "spinewatch_notifications_failed",
            "Delivery attempts that failed, by receiver and decision (retry or rejected).",
            ["receiver", "decision"],
            registry=registry,
        )
        self.latency = Histogram(
            "spinewatch_notification_delivery_seconds",
            "From the transition to the receiver's acceptance.",
            ["receiver"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
            registry=registry,
        )
        self.invalid = Counter(
            "spinewatch_drift_messages_invalid", "Drift messages that failed their contract.",
            registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            "spinewatch_drift_messages_skipped",
            "Valid drift messages that could not be recorded and were skipped, by error type.",
            ["error"],
            registry=registry,
        )
        self.messages = Counter(
            "spinewatch_drift_messages", "Drift messages recorded, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.rejected = Counter(
            "spinewatch_drift_messages_rejected",
            "Drift messages dead-lettered unread: unsigned, bad_signature or unknown_key.",
            ["reason"],
            registry=registry,
        )
        export_at_zero(self.rejected, SIGNATURE_FAULTS)
        self.refused = Counter(
            "spinewatch_api_requests_refused",
            "API requests refused for want of an identity (401), by reason.",
            ["reason"],
            registry=registry,
        )
