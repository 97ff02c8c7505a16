"""`python -m spinewatch` is the `spinewatch` command."""

from spinewatch.cli.main import main

raise SystemExit(main())
