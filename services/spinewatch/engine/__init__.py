"""The outcomes worker: a faust app that keeps exact outcome metrics per cohort.

`main` runs one worker process; `bootstrap` builds it from `settings` (the app
factory in `app`, the agents' steps in `stream_steps`, ingest in `ingest` and
`ingest_pool`, the engine state in `outcomes`, drift charts in
`drift_monitor`, its Prometheus collector in `metrics`).
"""
