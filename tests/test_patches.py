"""The version guard of the patches of faust/aiokafka internals (`spinewatch.patches`).

A patch of private internals holds only for the releases it was tested
with. The worker must refuse to start on any other, naming the patch and
the versions, before it starts anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spinewatch import patches
from spinewatch.devservers.tansu import free_port
from spinewatch.errors import PatchVersionMismatch
from tests.support import TEST_SIGNING_KEY

DEADLINE_S = 60.0  # a refusal takes ~2 s; generous for a loaded 2-core machine


def test_the_installed_versions_are_the_tested_ones() -> None:
    patches.check_versions(tansu_compat=True)  # raises on a mismatch


def test_a_newer_faust_names_every_patch_of_its_internals_and_both_versions() -> None:
    installed = {"faust-streaming": "0.16.0", "aiokafka": "0.14.0"}
    with pytest.raises(PatchVersionMismatch) as caught:
        patches.check_versions(tansu_compat=True, installed=installed.__getitem__)
    assert [m[:3] for m in caught.value.mismatches] == [
        ("faust_flush", "faust-streaming", "0.16.0"),
        ("faust_recovery", "faust-streaming", "0.16.0"),
        ("tansu", "faust-streaming", "0.16.0"),
    ]
    message = str(caught.value)
    assert "patch faust_flush replaces private internals of faust-streaming" in message
    assert "tested with faust-streaming 0.15.3, but 0.16.0 is installed" in message


def test_the_tansu_patch_is_checked_only_when_it_applies() -> None:
    installed = {"faust-streaming": "0.15.3", "aiokafka": "0.13.0"}
    with pytest.raises(PatchVersionMismatch) as caught:
        patches.check_versions(tansu_compat=True, installed=installed.__getitem__)
    assert {m[0] for m in caught.value.mismatches} == {"faust_recovery", "tansu"}
    with pytest.raises(PatchVersionMismatch) as caught:
        patches.check_versions(tansu_compat=False, installed=installed.__getitem__)
    assert {m[0] for m in caught.value.mismatches} == {"faust_recovery"}


def test_a_missing_distribution_is_a_mismatch() -> None:
    with pytest.raises(PatchVersionMismatch, match="but none is installed"):
        patches.check_versions(tansu_compat=False, installed=lambda _dist: "none")


def fake_distribution(root: Path, name: str, version: str) -> Path:
    """A dist-info that importlib.metadata finds before the real one on PYTHONPATH."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    return root


def test_worker_refuses_to_start_on_a_faust_release_the_patches_were_not_tested_with(
    tmp_path: Path,
) -> None:
    shadow = fake_distribution(tmp_path / "shadow", "faust-streaming", "0.16.0")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SPINEWATCH_")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(shadow), env.get("PYTHONPATH", "")]),
        # A broker that is never contacted: the refusal comes first.
        "SPINEWATCH_KAFKA_BROKERS": "127.0.0.1:9",
        "SPINEWATCH_METRICS_PORT": str(free_port()),
        # Every other start-up requirement met, so only the versions can refuse.
        "SPINEWATCH_SIGNING_KEY": TEST_SIGNING_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-m", "spinewatch", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("spinewatch worker: patch faust_flush replaces private")
    assert "tested with faust-streaming 0.15.3, but 0.16.0 is installed" in done.stderr
    assert "patch faust_recovery" in done.stderr
    assert "spinewatch worker " not in done.stdout  # never reached "serving"
