"""The governance report's model: what a clinical quality team reads, as plain values."""
