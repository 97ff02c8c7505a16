"""Alerts: the model of an alert raised from a drift signal, and its severity policy."""
