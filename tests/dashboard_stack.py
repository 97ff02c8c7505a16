"""The dashboards' test stack: a real Prometheus in front of real spinewatch services.

`running_stack` starts Prometheus (Debian `prometheus`, configured from
deploy/prometheus/prometheus.yml: its job names and rules.yml, scraping
every second) and, each as its own OS process, `spinewatch worker`,
`spinewatch alerting` (on a real redis-server) and `spinewatch gateway`;
feeds them everything the dashboards show something of (a seeded cohort
with a drifting site, faults and refusals: `_feed`); waits until each
service shows it and Prometheus has scraped every target three times more;
and yields the Prometheus API with the alert links the alerting service
wrote. `view` sets a dashboard's variables as Grafana would, `check_board`
runs every expression of a dashboard through `promql.check_expression`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from spinewatch.adapters.state_codec import encode_facts
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.devservers.tansu import free_port
from spinewatch.domain.outcomes.facts import fact_of
from tests.gateways import gateway_settings, write_credentials
from tests.promql import (
    Answer,
    check_expression,
    dashboard_targets,
    dashboard_variables,
    grafana_builtins,
    substitute,
    variable_query,
    variable_value,
)
from tests.servers import Prometheus, prometheus
from tests.support import (
    TEST_SIGNING_KEY,
    consume,
    produce,
    produce_keyed,
    scaled,
    scrape,
    sum_by,
    value,
    worker_settings,
)
from tests.test_alerting import _signal
from tests.test_gateway_e2e import procedure
from tests.workers import ServiceProcess, WorkerProcess, settings_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DATASOURCE_UID = "spinewatch-prometheus"
SCRAPE_INTERVAL_S = 1

T = TypeVar("T")


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON of deploy/grafana/dashboards, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def builtins(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Grafana's own variables for `dashboard` in front of this test's Prometheus."""
    return grafana_builtins(dashboard, SCRAPE_INTERVAL_S)


PVP, HEMANGIOMA, METASTASIS = ProcedureType.PVP, Indication.HEMANGIOMA, Indication.METASTASIS
DRIFTING = "drifting"
LEAKAGE = "cement_leakage_rate_per_level"
SITES = (
    # Leakage odds tripled from its 200th procedure on: the chart signals and pages.
    SiteProfile(DRIFTING, 500, {(PVP, HEMANGIOMA): 1.0}, leakage_odds_ratio=3.0, drift_after=200),
    # Metastases too: sentinel metrics and per-patient leakage are charted there.
    SiteProfile("steady", 400, {(PVP, HEMANGIOMA): 0.6, (PVP, METASTASIS): 0.4}),
)
SEED = 19


class LivePrometheus:
    """`promql.Prometheus` over the real server's HTTP API, answers cached."""

    def __init__(self, api: Prometheus) -> None:
        self.api = api
        self._answers: dict[str, Answer] = {}

    def instant(self, promql: str) -> Answer:
        if promql not in self._answers:
            body = self.api.get("/api/v1/query", [("query", promql)])
            if body["status"] != "success":
                answer = Answer(False, f"{body.get('errorType')}: {body.get('error')}", 0)
            else:
                data = body["data"]
                vector = data["resultType"] in {"vector", "matrix"}
                answer = Answer(True, "", len(data["result"]) if vector else 1)
            self._answers[promql] = answer
        return self._answers[promql]

    def label_values(self, label: str, match: str | None) -> list[str]:
        params = [("match[]", match)] if match else []
        body = self.api.get(f"/api/v1/label/{label}/values", params)
        assert body["status"] == "success", body
        return sorted(body["data"])


@dataclass(frozen=True)
class Stack:
    prometheus: LivePrometheus
    # The dashboard links of the alerts the alerting service raised (audit topic).
    links: dict[str, list[str]]  # alertname -> URLs


def _scrape_config(addresses: Mapping[str, str]) -> str:
    """deploy/prometheus/prometheus.yml with this run's targets, every second."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(addresses), f"the deployment scrapes {jobs}: start each in this test"
    assert config["rule_files"] == ["rules.yml"]
    config["rule_files"] = [str(DEPLOY / "prometheus/rules.yml")]
    interval = f"{SCRAPE_INTERVAL_S}s"
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config.pop("alerting")  # no Alertmanager here: the rules are evaluated, not sent
    for job in config["scrape_configs"]:
        # The workers are found by DNS in the compose stack; here, one address.
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [addresses[job["job_name"]]]}]
    return yaml.safe_dump(config)


def _post(url: str, body: bytes, token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def until(what: str, done: Callable[[], T], timeout_s: float) -> T:
    """Poll `done()` until it returns something truthy; fail at the (scaled) deadline.

    Waits at least as long as a probe took between probes: scraping three
    services back to back costs the CPU their work needs (tests/support.py).
    """
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        started = time.monotonic()
        result = done()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout_s):g} s waiting for {what}")
        time.sleep(max(0.2, time.monotonic() - started))


def _forged_facts() -> list[tuple[bytes, bytes]]:
    """A well-formed fact batch, unsigned: the worker must refuse it unread."""
    other = generate_cohort(SEED + 1, [SiteProfile("forged", 3, {(PVP, HEMANGIOMA): 1.0})])
    parsed = [parse_event(encode(e)) for e in other.events[:3]]
    return [(b"forged", encode_facts([(e.procedure_id.bytes, fact_of(e)) for e in parsed]))]


def _feed(worker: WorkerProcess, gateway: ServiceProcess, alerting: ServiceProcess,
          tokens: Mapping[str, str]) -> int:  # fmt: skip
    """Everything the dashboards show something of; returns the events expected applied."""
    settings = worker.settings
    brokers = settings.kafka_brokers
    assert brokers is not None
    cohort = generate_cohort(SEED, SITES)
    assert cohort.malformed, "the seeded cohort must hold a malformed message"
    asyncio.run(produce(brokers, settings.events_topic, cohort.deliveries))
    asyncio.run(produce_keyed(brokers, settings.facts_topic, _forged_facts()))
    forged = _signal().model_copy(update={"site_id": "forged"})
    asyncio.run(
        produce_keyed(
            brokers, settings.drift_topic, [(b"forged", forged.model_dump_json().encode())]
        )
    )
    # The gateway: one event accepted, one refused by its contract, one without a token.
    events = f"{gateway.url}/v1/events"
    assert _post(events, json.dumps(procedure()).encode(), tokens["north"]) == 202
    invalid = {k: v for k, v in procedure().items() if k != "procedure_type"}
    assert _post(events, json.dumps(invalid).encode(), tokens["north"]) == 422
    assert _post(events, json.dumps(procedure()).encode(), None) == 401
    # The alerting API without an identity: refused and counted.
    assert _post(f"{alerting.url}/alerts/x/ack", b"{}", None) == 401
    return len(cohort.events) + 1


def _settled(worker: WorkerProcess, alerting: ServiceProcess, gateway: ServiceProcess,
             applied: int) -> bool:  # fmt: skip
    w = scrape(f"{worker.url}/metrics")
    a = scrape(f"{alerting.url}/metrics")
    g = scrape(f"{gateway.url}/metrics")
    return (
        value(w, "spinewatch_events_applied_total") >= applied
        and sum_by(w, "spinewatch_events_deadlettered_total") >= 1
        and sum_by(w, "spinewatch_fact_batches_deadlettered_total", reason="unsigned") >= 1
        and value(w, "spinewatch_drift_design_pending") == 0
        and value(
            w, "spinewatch_drift_chart_state", site=DRIFTING, metric=LEAKAGE, direction="worse"
        )
        == 1
        and sum_by(w, "spinewatch_site_silence_threshold_seconds") > 0
        and sum_by(a, "spinewatch_drift_messages_rejected_total", reason="unsigned") >= 1
        and value(a, "spinewatch_alerts_firing", severity="warning") >= 1
        and sum_by(a, "spinewatch_notifications_sent_total", receiver="audit") >= 1
        and sum_by(a, "spinewatch_notifications_failed_total") >= 1
        and sum_by(a, "spinewatch_api_requests_refused_total") >= 1
        and value(g, "spinewatch_gateway_events_total", outcome="accepted") >= 1
        and sum_by(g, "spinewatch_gateway_rejections_total") >= 2
    )


def _dashboard_links(brokers: str, topic: str) -> dict[str, list[str]]:
    """alertname -> the dashboard links of its firing transitions on the audit topic."""
    records = asyncio.run(consume(brokers, topic, 10_000, timeout_s=2))
    links: dict[str, list[str]] = {}
    for record in records:
        audit = json.loads(record.value or b"{}")
        if audit.get("transition") == "firing" and "dashboard" in audit.get("annotations", {}):
            name = audit["labels"]["alertname"]
            links.setdefault(name, []).append(audit["annotations"]["dashboard"])
    return links


def _scraped_since(api: Prometheus, since: float) -> bool:
    """Every job up, its last three scrapes successful and the last one 3 s after `since`."""
    window = f"{3 * SCRAPE_INTERVAL_S + 1}s"
    body = api.get(
        "/api/v1/query",
        [("query", f'min_over_time(up{{job=~"spinewatch-.*"}}[{window}]) '
                   f'and timestamp(up{{job=~"spinewatch-.*"}}) > {since + 3 * SCRAPE_INTERVAL_S}')],
    )  # fmt: skip
    return body["status"] == "success" and {
        (r["metric"]["job"], r["value"][1]) for r in body["data"]["result"]
    } == {("spinewatch-engine", "1"), ("spinewatch-alerting", "1"), ("spinewatch-gateway", "1")}


@contextlib.contextmanager
def running_stack(kafka_bootstrap: str, redis_url: str, workdir: Path) -> Iterator[Stack]:
    """The stack above, fed and scraped; stopped (every process waited on) on exit."""
    app_id = f"d{uuid.uuid4().hex[:12]}"
    worker = WorkerProcess(
        worker_settings(
            kafka_bootstrap,
            app_id,
            drift_interval_s=0.2,
            ingest_processes=0,  # triage inline: one process to start on a shared machine
            data_dir=workdir / "worker",
            # Sites judged after two arrivals, silent a second after the feed ends: the
            # silence gauges and the alerting service's silence alerts have data.
            silence_window_s=60.0,
            silence_min_arrivals=2,
            silence_min_s=1.0,
        )
    )
    credentials = write_credentials(workdir)
    gateway_port = free_port()
    gateway = ServiceProcess(
        "gateway",
        settings_env(
            gateway_settings(
                kafka_bootstrap, redis_url, credentials, app_id=app_id, port=gateway_port
            ),
            "SPINEWATCH_GATEWAY_",
        ),
        f"http://127.0.0.1:{gateway_port}",
    )
    alerting_settings = AlertingSettings(
        kafka_brokers=kafka_bootstrap,
        app_id=app_id,
        redis_url=redis_url,
        key_prefix=app_id,
        # A receiver that is down: failed deliveries are on the pipeline dashboard.
        webhook_urls=(f"http://127.0.0.1:{free_port()}/hook",),
        http_port=free_port(),
        poll_interval_s=0.1,
        signing_key=TEST_SIGNING_KEY,
    )
    alerting = ServiceProcess(
        "alerting",
        settings_env(alerting_settings, "SPINEWATCH_ALERTING_"),
        f"http://127.0.0.1:{alerting_settings.http_port}",
    )
    addresses = {
        "spinewatch-engine": f"127.0.0.1:{worker.settings.metrics_port}",
        "spinewatch-alerting": f"127.0.0.1:{alerting_settings.http_port}",
        "spinewatch-gateway": f"127.0.0.1:{gateway_port}",
    }
    with contextlib.ExitStack() as cleanup, prometheus(workdir, _scrape_config(addresses)) as api:
        for service in (worker, alerting, gateway):
            service.start()
            cleanup.callback(service.stop)
        asyncio.run(worker.wait_for_partitions())
        alerting.wait_ready()
        gateway.wait_ready()
        applied = _feed(worker, gateway, alerting, credentials.tokens)
        until(
            "the stack to hold every series the dashboards show",
            lambda: _settled(worker, alerting, gateway, applied),
            90,
        )
        settled_at = time.time()

        def drift_alert_links() -> dict[str, list[str]]:
            found = _dashboard_links(kafka_bootstrap, alerting_settings.alerts_topic)
            return found if "SpinewatchDriftSignal" in found else {}

        links = until("the drift alert on the audit topic", drift_alert_links, 30)
        until(
            "Prometheus to scrape every target since", lambda: _scraped_since(api, settled_at), 30
        )
        yield Stack(LivePrometheus(api), links)


@dataclass(frozen=True)
class View:
    values: dict[str, str]
    problems: list[str]


def view(
    live: LivePrometheus, board: Mapping[str, Any], chosen: Mapping[str, Sequence[str]]
) -> View:
    """The dashboard's variables as Grafana would set them: chosen, or their defaults."""
    values, problems = builtins(board), []
    for variable in dashboard_variables(board):
        match = substitute(variable.match, values) if variable.match else None
        options = live.label_values(variable.label, match)
        where = f"{board['uid']} variable {variable.name}"
        if not options:
            problems.append(
                f"{where}: {_variable_query_of(board, variable.name)} returns no values"
            )
            continue
        if variable.name in chosen:
            picked = list(chosen[variable.name])
        elif variable.default is None:  # All: a custom all value, or every value
            values[variable.name] = variable.all_value or variable_value(variable, options)
            continue
        else:  # the saved value, or Grafana's first option
            picked = list(variable.default) or options[:1]
        if not set(picked) <= set(options):
            problems.append(f"{where}: {sorted(set(picked) - set(options))} not among {options}")
        values[variable.name] = variable_value(variable, picked)
    return View(values, problems)


def _variable_query_of(board: Mapping[str, Any], name: str) -> str:
    (raw,) = [v for v in board["templating"]["list"] if v["name"] == name]
    return variable_query(raw)


def check_board(live: LivePrometheus, board: Mapping[str, Any], shown: View) -> list[str]:
    """Every expression of `board` in the view `shown`: what is wrong with each ([] if none)."""
    problems = list(shown.problems)
    for target in dashboard_targets(board):
        expr = substitute(target.expr, shown.values)
        problems += check_expression(live, target.where, expr, needs_data=True)
    return problems
