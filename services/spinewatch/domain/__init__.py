"""The domain: pure functions and values, no I/O (nothing here imports faust,
Kafka, Redis or HTTP; `tests/test_architecture.py` checks it).

`outcomes/` keeps the exact metrics per cohort, `drift/` designs and runs
the risk-adjusted charts, `alerts/` turns a drift signal into an alert.

State lives per procedure (`ProcedureRecord`): the events received for it,
keyed by `event_id`. Applying an event twice is a no-op, a follow-up that
arrives before its procedure is simply held in the record, and a retraction
removes exactly its target. Cohort metrics are never updated in place: they
are the sum of each record's `Contribution`, so they can be rebuilt exactly
from the records after any restart, and an update is "subtract the old
contribution, add the new one".
"""
