"""Fixes of faust-streaming, aiokafka and Tansu behaviour, applied from one place.

Each patch replaces private internals of a dependency (`ProducerBuffer.
_send_pending`, `Recovery._resume_streams`, `ThreadDelegateConsumer._getmany`,
`GroupCoordinator._maybe_leave_group`, ...), so each holds only for the
releases it was written and tested against: a changed internal upstream
would otherwise pass silently and bring back the loss it fixes. `apply()`
first compares the installed versions with each patch's tested versions and
raises `PatchVersionMismatch`, naming the patch and the versions, before it
imports anything of faust; `spinewatch worker` turns that into a refusal to
start. pyproject.toml pins the same versions.

* `faust_flush`: a flush waits for every message buffered before it, so
  offsets are never committed ahead of their changelog records.
* `faust_recovery`: streams resume only after the seek to the committed
  offsets, and each fetch sees a snapshot of the active partitions (the
  fault lies between faust's consumer thread and aiokafka's fetcher, so it
  is tied to both).
* `tansu`: LeaveGroup from generation 0, and a short fetch wait (applied only
  on a Tansu broker; see `tansu` for the third work-around, a setting).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from spinewatch.errors import PatchVersionMismatch

FAUST = "faust-streaming"
AIOKAFKA = "aiokafka"


@dataclass(frozen=True)
class Patch:
    module: str  # in this package
    function: str  # applies it; idempotent
    tested: Mapping[str, tuple[str, ...]]  # distribution -> versions it was tested with
    tansu_only: bool = False


# The versions each patch was written and tested for (the whole suite,
# SIGKILL-restart exactness included). Add a version only after that suite
# passed on it.
PATCHES = (
    Patch("faust_flush", "apply_flush_fix", {FAUST: ("0.15.3",)}),
    Patch("faust_recovery", "apply_recovery_fix", {FAUST: ("0.15.3",), AIOKAFKA: ("0.14.0",)}),
    Patch(
        "tansu", "apply_tansu_compat", {FAUST: ("0.15.3",), AIOKAFKA: ("0.14.0",)}, tansu_only=True
    ),
)


def installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "none"


def check_versions(
    *, tansu_compat: bool, installed: Callable[[str], str] = installed_version
) -> None:
    """Raise `PatchVersionMismatch` for every patch to apply whose tested versions differ."""
    mismatches = [
        (patch.module, dist, found, tested)
        for patch in PATCHES
        if tansu_compat or not patch.tansu_only
        for dist, tested in patch.tested.items()
        if (found := installed(dist)) not in tested
    ]
    if mismatches:
        raise PatchVersionMismatch(mismatches)


def apply(*, tansu_compat: bool) -> None:
    """Check the versions, then apply every patch (the Tansu ones only on Tansu)."""
    check_versions(tansu_compat=tansu_compat)
    for patch in PATCHES:
        if tansu_compat or not patch.tansu_only:
            getattr(import_module(f"{__name__}.{patch.module}"), patch.function)()
