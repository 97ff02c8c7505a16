"""Seeded synthetic cohorts of PVP/PKP events (`cohort` is the public surface)."""
