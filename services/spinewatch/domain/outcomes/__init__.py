"""Outcome metrics per cohort: records, contributions, aggregates, reports."""
