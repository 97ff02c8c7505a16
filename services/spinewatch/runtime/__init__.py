"""What every service shares and no port owns: supervision of long-running
loops, health checks, the failure policy for a message, settings from the
environment, logging hygiene and process lifetime."""
