"""Adapters: ports to Kafka, Redis, HTTP and the health of the stream."""
