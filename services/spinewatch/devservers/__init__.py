"""Servers for development only: an embedded Tansu broker and a Redis.

`spinewatch demo`, `spinewatch worker --embedded-broker` and the test suite
use them; a deployment points at real Kafka and Redis instead.
"""
