"""Adapters: everything that talks to Kafka, HTTP, Prometheus or processes."""
