"""The Grafana dashboards and their provisioning, by structure; the PromQL checker, pure.

Every dashboard JSON parses, has a unique uid and names the provisioned data
source by its uid on every panel, target and variable; every variable an
expression uses is defined; a multi-value variable is matched as a regex;
the provisioning YAML parses and agrees with docker-compose.yml; the
alerting service's default dashboard URL opens the drift dashboard. Then
the selector tokenizer, Grafana's variable substitution and the checker of
tests/promql.py, on expressions whose answers are known. Running the
queries against a real Prometheus is tests/test_dashboards_promql.py.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

import pytest
import yaml

from spinewatch.alerting.settings import AlertingSettings
from spinewatch.domain.alerts.policy import SENTINEL_METRICS
from tests.dashboard_stack import DATASOURCE_UID, DEPLOY, ROOT, builtins, load_dashboards
from tests.promql import (
    Answer,
    PromQLSyntaxError,
    UnknownVariable,
    check_expression,
    dashboard_targets,
    dashboard_variables,
    grafana_builtins,
    label_values_query,
    panels,
    selectors,
    substitute,
    variable_value,
    variables_in,
)

GRAFANA = DEPLOY / "grafana"


# -- structure ------------------------------------------------------------------------------


def test_every_dashboard_parses_with_a_unique_uid_and_the_provisioned_datasource() -> None:
    boards = load_dashboards()
    assert len(boards) >= 4, sorted(boards)
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids), uids
    for name, board in boards.items():
        # Grafana's limits: at most 40 characters, letters, digits, - and _.
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]), name
        assert name == f"{board['uid']}.json", "one file per dashboard, named by its uid"
        assert board["title"].startswith("spinewatch"), name
        assert "spinewatch" in board["tags"], name
        ids = [panel["id"] for panel in panels(board)]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        for panel in panels(board):
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), (name, panel["title"])
            if panel["type"] == "row":
                assert "targets" not in panel, (name, panel["title"])
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, (
                name,
                panel["title"],
            )
            assert panel.get("description"), f"{name}: {panel['title']!r} says nothing"
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, (name, panel["title"])
                assert target["expr"].strip(), (name, panel["title"])
        refs = [
            (panel["id"], t["refId"]) for panel in panels(board) for t in panel.get("targets", [])
        ]
        assert len(set(refs)) == len(refs), f"{name}: refIds repeat within a panel"
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == DATASOURCE_UID, (name, variable["name"])
        # Every variable is a label_values(...) query, and every one an expression
        # names is defined (or one of Grafana's own).
        defined = {v.name: "x" for v in dashboard_variables(board)} | builtins(board)
        for target in dashboard_targets(board):
            substitute(target.expr, defined)


def test_provisioning_names_the_uid_the_dashboards_use_and_compose_mounts_them() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "prometheus"
    assert source["url"] == "${SPINEWATCH_PROMETHEUS_URL}"
    # The same scrape interval as deploy/prometheus: $__rate_interval covers 4 scrapes.
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())["global"]
    assert source["jsonData"]["timeInterval"] == scrape["scrape_interval"]

    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/spinewatch.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    # source:target[:mode]; the data volume (grafana-data:/var/lib/grafana) has no mode.
    parts = [volume.split(":") for volume in compose["volumes"]]
    mounts = {part[0]: part[1] for part in parts}
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert compose["environment"]["SPINEWATCH_PROMETHEUS_URL"] == (
        "${SPINEWATCH_PROMETHEUS_URL:-http://prometheus:9090}"
    )


def test_the_alerting_default_dashboard_url_opens_the_drift_dashboard() -> None:
    default = AlertingSettings.model_fields["dashboard_url"].default
    path = urllib.parse.urlsplit(default).path
    found = re.fullmatch(r"/d/([^/]+)/[a-z0-9-]+", path)
    assert found is not None, default
    boards = {board["uid"]: board for board in load_dashboards().values()}
    board = boards[found.group(1)]
    # Alert annotations add ?var-site=...&var-metric=... (domain/alerts/model.py).
    assert {"site", "metric"} <= {v.name for v in dashboard_variables(board)}


def test_multi_value_variables_are_matched_as_regexes() -> None:
    """`site="$site"` matches nothing once two sites (or All) are chosen."""
    for name, board in load_dashboards().items():
        multi = {v.name for v in dashboard_variables(board) if v.multi}
        for target in dashboard_targets(board):
            for used in set(variables_in(target.expr)) & multi:
                for found in re.finditer(rf'(=~|!~|=|!=)\s*"\$\{{?{used}\}}?"', target.expr):
                    assert found.group(1) in {"=~", "!~"}, (name, target.where, used)


def test_the_sentinel_panel_names_the_sentinel_metrics_of_the_policy() -> None:
    drift = load_dashboards()["spinewatch-drift.json"]
    regexes = {
        found.group(1)
        for target in dashboard_targets(drift)
        for found in re.finditer(r'metric=~"([a-z_|]+)"', target.expr)
    }
    assert {frozenset(r.split("|")) for r in regexes} == {frozenset(SENTINEL_METRICS)}


# -- the tokenizer and the substitution (pure) ----------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", ["up"]),
        ('up{job="spinewatch-gateway"} == 0', ['up{job="spinewatch-gateway"}']),
        (
            "sum by (reason) (increase(spinewatch_events_deadlettered_total[15m])) > 0",
            ["spinewatch_events_deadlettered_total"],
        ),
        (
            "sum by (job, reason) (increase(a_total[10m])) > 0 or sum by (job) (increase(b_total[10m])) > 0",
            ["a_total", "b_total"],
        ),
        ('max by (site) (x{a="b,}c", d=~"e|f"}) == 1', ['x{a="b,}c", d=~"e|f"}']),
        ("histogram_quantile(0.95, sum by (le, route) (rate(h_bucket[21s])))", ["h_bucket"]),
        (
            'a{s="1"} * 0 + on (procedure, metric) group_left max by (procedure, metric) (b)',
            ['a{s="1"}', "b"],
        ),
        ("x * on (site) group_left c", ["x", "c"]),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', ["m"]),
        ('{__name__=~"spinewatch_.+"}', ['{__name__=~"spinewatch_.+"}']),
        ("rate(x[5m] offset 1h) / rate(x[5m:1m])", ["x"]),
        ("x offset -5m + y @ end()", ["x", "y"]),
        ("sum(x) by (site) / count without (instance) (y)", ["x", "y"]),
        ('topk(3, x) > bool 0.5 and count_values("v", y) unless z', ["x", "y", "z"]),
        ("job:rate5m:sum > Inf or NaN < -1e3", ["job:rate5m:sum"]),
        ("(a > bool b) + (a < bool c) # a comment naming d\n- e", ["a", "b", "c", "e"]),
        ('vector(1) or absent(m{a="b"})', ['m{a="b"}']),
    ],
)
def test_selectors_are_the_vector_selectors_of_an_expression(
    expr: str, expected: list[str]
) -> None:
    assert selectors(expr) == expected


def test_the_tokenizer_refuses_an_unterminated_string() -> None:
    with pytest.raises(PromQLSyntaxError):
        selectors('up{job="x}')


def test_grafana_variables_are_substituted_and_an_unknown_one_is_an_error() -> None:
    values = {"site": "(a|b)", "metric": "m", "__rate_interval": "21s"}
    assert (
        substitute(
            'rate(x{site=~"$site", metric="${metric}"}[$__rate_interval]) [[metric]]', values
        )
        == 'rate(x{site=~"(a|b)", metric="m"}[21s]) m'
    )
    with pytest.raises(UnknownVariable):
        substitute('x{site=~"$sitee"}', values)
    with pytest.raises(UnknownVariable):
        substitute('x{site=~"${site:csv}"}', values)
    assert label_values_query('label_values(up{job=~"s-.*"}, job)') == ('up{job=~"s-.*"}', "job")
    assert label_values_query("label_values(site)") == (None, "site")
    # Grafana's $__rate_interval: max($__interval + scrape, 4 x scrape).
    drift = load_dashboards()["spinewatch-drift.json"]
    assert builtins(drift) == {"__interval": "20s", "__rate_interval": "21s", "__range": "6h"}
    assert grafana_builtins(drift, 15)["__rate_interval"] == "60s"  # the deployment's 15 s
    variable = dashboard_variables(drift)[0]
    assert variable_value(variable, ["a.b", "c"]) == r"(a\.b|c)"


class _Stub:
    """A Prometheus that answers from a table: an unknown metric has no series."""

    def __init__(self, exported: Mapping[str, int]) -> None:
        self.exported = exported

    def instant(self, promql: str) -> Answer:
        if promql.count("(") != promql.count(")"):
            return Answer(ok=False, error="bad_data: unclosed left parenthesis", series=0)
        if "or vector(0)" in promql:
            return Answer(ok=True, error="", series=1)
        return Answer(ok=True, error="", series=self.exported.get(promql, 0))

    def label_values(self, label: str, match: str | None) -> list[str]:
        return []


def test_the_checker_reports_a_metric_nothing_exports() -> None:
    stub = _Stub({"spinewatch_events_applied_total": 1, "sum(spinewatch_events_applied_total)": 1})
    assert (
        check_expression(stub, "ok", "sum(spinewatch_events_applied_total)", needs_data=True) == []
    )
    empty, unexported = check_expression(
        stub, "board / p / A", "sum(spinewatch_no_such_metric_total)", needs_data=True
    )
    assert "returns no data" in empty
    assert "selector spinewatch_no_such_metric_total matches no series" in unexported
    # Data from `or vector(0)` does not hide it: its selector matches nothing.
    (hidden,) = check_expression(
        stub, "board / p / B", "spinewatch_no_such_metric or vector(0)", needs_data=True
    )
    assert "selector spinewatch_no_such_metric matches no series" in hidden
    # An alert's condition may be false (no data): its selectors still must match.
    assert (
        check_expression(stub, "rule", "spinewatch_events_applied_total == 0", needs_data=False)
        == []
    )
    (broken,) = check_expression(stub, "board / p / C", "sum(x", needs_data=True)
    assert "does not parse" in broken
