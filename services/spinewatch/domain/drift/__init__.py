"""Risk-adjusted sequential charts: CUSUM design, ARL, per-site drift."""
