"""Entrypoints: the `spinewatch` command and its subcommands."""
