"""spinewatch: event-driven outcomes tracking for percutaneous vertebral augmentation.

The package is one room per concern, and imports point one way
(`tests/test_architecture.py` checks it with import-linter)::

    cli/ ............ entrypoints: `spinewatch <command>`, `spinewatch plan`
    demo/ ........... the demo and its seeded synthetic cohorts
    report/ ......... the governance report (HTML, PDF) from files or the running system
    engine/ ......... service: the outcomes worker (faust app, ingest, drift monitor)
    alerting/ ....... service: drift messages -> Redis -> Alertmanager and webhooks
    gateway/ ........ service: authenticated HTTP and FHIR R4 intake of events
    replay/ ......... service: backfill from JSON Lines, CSV and FHIR files, resumable
    adapters/ ....... ports to Kafka, Redis and HTTP
    fhir/ ........... pure FHIR R4 -> event mapping, pseudonymised at the door
    patches/ ........ version-checked fixes of faust, aiokafka and Tansu behaviour
    devservers/ ..... embedded Tansu and Redis for the demo and the tests
    runtime/ ........ what every service shares: supervision, health, failure policy
    domain/ ......... pure clinical logic: outcomes, drift charts, alerts (no I/O)
    contracts/ ...... event contracts and the topic catalogue
    baselines/ ...... the cited literature catalog (package data)
    errors.py ....... the one exception tree
"""

__version__ = "0.1.0"
