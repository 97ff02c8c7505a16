"""Every PromQL expression of the dashboards and the rules, run against a real Prometheus.

A real Prometheus scrapes a real worker, alerting service and gateway fed a
seeded cohort (tests/dashboard_stack.py says what with, and why). Every
expression of every dashboard, with Grafana's variables substituted, must
parse and return data, and each of its selectors must match a series (an
`or vector(0)` cannot hide a metric the code does not export); every
variable query must return values, defaults included; every rule
expression must parse and each of its selectors match a series (an
alert's condition, `up == 0`, is false in a healthy run), and Prometheus
must load and evaluate every rule without error. A dashboard that queries
a metric the code does not export fails the same check.

Grafana's variables are written as Grafana's Prometheus data source
writes them: a dashboard variable takes its default (its `current` value,
or for "All" every value its `label_values(...)` query returns, as
`(a|b|c)`), or, in the alert-link view, the values of a real alert's
dashboard link; `$__interval` is 20s (Grafana's step for the default
6-hour range at about 1,000 points), `$__rate_interval` max($__interval +
scrape interval, 4 x scrape interval) = 21s at this Prometheus's 1 s
scrape (Grafana's formula), `$__range` the dashboard's default range (6h).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator

import pytest
import yaml

from spinewatch.domain.alerts.policy import SENTINEL_METRICS
from tests.dashboard_stack import (
    DASHBOARDS,
    DEPLOY,
    DRIFTING,
    LEAKAGE,
    Stack,
    check_board,
    load_dashboards,
    running_stack,
    until,
    view,
)
from tests.promql import (
    check_expression,
    dashboard_targets,
    dashboard_variables,
    panels,
    rule_expressions,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, module_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        kafka_bootstrap, module_redis, tmp_path_factory.mktemp("dashboards")
    ) as running:
        yield running


@pytest.mark.timeout(240)
def test_every_dashboard_expression_returns_data_in_the_default_view(stack: Stack) -> None:
    problems: list[str] = []
    checked = 0
    for board in load_dashboards().values():
        problems += check_board(stack.prometheus, board, view(stack.prometheus, board, {}))
        checked += len(dashboard_targets(board))
    assert checked >= 60
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(240)
def test_the_alert_links_open_their_dashboard_on_data(stack: Stack) -> None:
    boards = {board["uid"]: board for board in load_dashboards().values()}
    problems: list[str] = []
    for alertname, urls in stack.links.items():
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            uid = re.fullmatch(r"/d/([^/]+)/[a-z0-9-]+", parts.path)
            assert uid is not None, (alertname, url)
            assert uid.group(1) in boards, (alertname, url)
            board = boards[uid.group(1)]
            chosen: dict[str, list[str]] = {}
            for key, values in urllib.parse.parse_qs(parts.query).items():
                name = key.removeprefix("var-")
                assert name in {v.name for v in dashboard_variables(board)}, (alertname, url)
                chosen[name] = values
            if alertname == "SpinewatchSentinelEvent":
                # A sentinel has no chart: its link shows the site's sentinel panel,
                # which must count the case that paged.
                (site,), (metric,) = chosen.pop("site"), chosen.pop("metric")
                assert metric in SENTINEL_METRICS, url
                case = f'sum(spinewatch_outcome_numerator{{site="{site}", metric="{metric}", operator="all"}}) > 0'
                if not stack.prometheus.instant(case).series:
                    problems.append(f"{url}: the sentinel panel does not show the case")
                chosen["site"] = [site]
            # Every link: its variables and their values exist on the dashboard.
            problems += view(stack.prometheus, board, chosen).problems
    # The seeded drift's link (a rate chart): every panel of the drift dashboard shows it.
    (link,) = {
        url for url in stack.links["SpinewatchDriftSignal"]
        if f"var-site={DRIFTING}&var-metric={LEAKAGE}" in url
    }  # fmt: skip
    board = boards[urllib.parse.urlsplit(link).path.split("/")[2]]
    chosen = {"site": [DRIFTING], "metric": [LEAKAGE]}
    problems += check_board(stack.prometheus, board, view(stack.prometheus, board, chosen))
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(240)
def test_every_rule_expression_parses_and_its_selectors_match_series(stack: Stack) -> None:
    document = yaml.safe_load((DEPLOY / "prometheus/rules.yml").read_text())
    expressions = rule_expressions(document)
    problems: list[str] = []
    for rule in expressions:
        # An alert's condition is false in a healthy run (up == 0): its selectors
        # must match series; a recording rule must return data itself.
        problems += check_expression(
            stack.prometheus, rule.where, rule.expr, needs_data=not rule.alert
        )
    assert not problems, "\n".join(problems)
    # Prometheus itself loaded every rule of the file and evaluates each without error.
    body = stack.prometheus.api.get("/api/v1/rules")
    loaded = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert len(loaded) == len(expressions)
    until(
        "every rule evaluated",
        lambda: all(
            rule["health"] == "ok"
            for group in stack.prometheus.api.get("/api/v1/rules")["data"]["groups"]
            for rule in group["rules"]
        ),
        10,
    )


@pytest.mark.timeout(240)
def test_a_dashboard_querying_a_metric_the_code_does_not_export_fails(stack: Stack) -> None:
    """The same check as above on a dashboard with three mistakes: each is reported."""
    board = json.loads((DASHBOARDS / "spinewatch-pipeline.json").read_text())
    (first, *_) = [panel for panel in panels(board) if panel.get("targets")]
    template = first["targets"][0]
    first["targets"] = [
        template | {"refId": "A", "expr": 'sum by (reason) (rate(spinewatch_no_such_metric_total{job=~"$job"}[$__rate_interval]))'},
        template | {"refId": "B", "expr": 'spinewatch_no_such_metric or vector(0)'},
        template | {"refId": "C", "expr": "sum by (reason (spinewatch_events_applied_total)"},
        template | {"refId": "D", "expr": 'sum(spinewatch_events_applied_total{job=~"$job"})'},
    ]  # fmt: skip
    default = view(stack.prometheus, board, {})
    problems = [
        p for p in check_board(stack.prometheus, board, default) if f"{first['title']!r}" in p
    ]
    assert [p.split(":")[0].rsplit("/ ", 1)[1] for p in problems] == ["A", "A", "B", "C"], problems
    assert "returns no data" in problems[0]
    assert "selector spinewatch_no_such_metric_total" in problems[1]
    assert "selector spinewatch_no_such_metric matches no series" in problems[2]
    assert "does not parse" in problems[3]


@pytest.mark.timeout(240)
def test_the_first_dead_letter_of_a_reason_fires_its_alert(stack: Stack) -> None:
    """The seeded malformed event and unsigned fact batch and drift message fire the
    pipeline's dead-letter alerts. Each was the first of its reason in its process:
    `increase()` sees it only because the counters are exported at 0 from the start."""

    def firing() -> set[str]:
        answer = stack.prometheus.api.get(
            "/api/v1/query", [("query", 'ALERTS{alertstate="firing"}')]
        )
        return {sample["metric"]["alertname"] for sample in answer["data"]["result"]}

    wanted = {"SpinewatchDeadLetters", "SpinewatchUnsignedInternalMessages"}
    until("the dead-letter alerts firing", lambda: wanted <= firing(), 30)
