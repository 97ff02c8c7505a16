"""The Prometheus rules and the Alertmanager routing example, checked by their own tools.

`promtool test rules` runs the unit tests in deploy/prometheus/rules_test.yml
(every rule firing and resolving); the severities in the rules must agree
with the one severity table the alerting service uses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spinewatch.domain.alerts.policy import SENTINEL_METRICS, severity_of
from spinewatch.domain.alerts.silence import SILENCE_ALERT_NAME, SILENCE_METRIC
from tests.support import scaled

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `./dev test` installs it as root (Debian package)")
    return path


def _run(*args: str, cwd: Path) -> str:
    # Arguments are this test's own constants and a resolved tool path.
    result = subprocess.run(  # noqa: S603
        args, cwd=cwd, capture_output=True, text=True, timeout=scaled(60), check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    promtool = _tool("promtool")
    out = _run(promtool, "check", "rules", "rules.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS: 12 rules found" in out
    _run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")


def test_promtool_rule_unit_tests_fire_and_resolve() -> None:
    out = _run(_tool("promtool"), "test", "rules", "rules_test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out
    tests: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yml").read_text())
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    rules = _rules()
    for alert in {rule["alert"] for rule in rules}:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no quiet case"


def test_amtool_checks_the_routing_example() -> None:
    out = _run(_tool("amtool"), "check-config", "alertmanager.yml", cwd=DEPLOY / "alertmanager")
    assert "1 inhibit rules" in out


def _rules() -> list[dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_rule_severities_follow_the_severity_table() -> None:
    drift = [rule for rule in _rules() if rule["alert"] == "SpinewatchDriftSignal"]
    for rule in drift:
        (metric,) = re.findall(r'metric(?:!)?="([a-z_]+)"', rule["expr"])
        negated = 'metric!="' in rule["expr"]
        expected = "warning" if negated else severity_of(metric)
        assert rule["labels"]["severity"] == expected, rule["expr"]
    (sentinel,) = [rule for rule in _rules() if rule["alert"] == "SpinewatchSentinelEvent"]
    pattern = re.search(r'metric=~"([^"]+)"', sentinel["expr"])
    assert pattern is not None
    assert set(pattern.group(1).split("|")) == set(SENTINEL_METRICS)
    assert sentinel["labels"]["severity"] == "critical"
    assert all(severity_of(metric) == "critical" for metric in SENTINEL_METRICS)
    (silence,) = [rule for rule in _rules() if rule["alert"] == SILENCE_ALERT_NAME]
    assert silence["labels"]["severity"] == severity_of(SILENCE_METRIC)
