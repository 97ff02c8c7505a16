"""Fixes of faust, aiokafka and Tansu behaviour (see each module for the evidence)."""
