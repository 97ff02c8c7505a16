"""Locating the seed documents the baseline catalog cites.

The seeds are not shipped with the package: they live in the steering
repository's `shared/seeds`, checked out beside this one. `SPINEWATCH_SEEDS_DIR`
overrides the search.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPINEWATCH_SEEDS_DIR"


def default_seeds_dir(start: Path | None = None) -> Path:
    """`$SPINEWATCH_SEEDS_DIR`, else the nearest `<ancestor>/shared/seeds`."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    origin = (start or Path.cwd()).resolve()
    for directory in (origin, *origin.parents):
        candidate = directory / "shared" / "seeds"
        if candidate.is_dir():
            return candidate
    # Fall back to the conventional place beside the repository, so the error
    # the caller reports names a concrete path.
    return Path(__file__).resolve().parents[3].parent / "shared" / "seeds"
