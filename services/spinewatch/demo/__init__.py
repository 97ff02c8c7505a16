"""`spinewatch demo`: a seeded synthetic cohort through a real worker and alerting."""
