"""`spinewatch replay`: backfill events from files, to Kafka or through the gateway."""
