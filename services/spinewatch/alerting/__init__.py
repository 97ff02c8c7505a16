"""The alerting service: drift messages -> Redis alert state -> receivers.

`main` runs the process, `process` wires its supervised loops and HTTP
endpoint, `service` is the logic (record, deliver, re-send, acknowledge),
`settings` its `SPINEWATCH_ALERTING_*` settings. The alert model and the
severity policy are pure and live in `spinewatch.domain.alerts`.
"""
