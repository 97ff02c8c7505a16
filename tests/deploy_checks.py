"""Checks of the deployment files that their schemas cannot make (tests/test_deploy.py).

Each check takes the parsed file and returns the problems it found, one
line each, so a test can run it on the real file (no problem) and on a
deliberately broken copy (the problem named): a check that cannot fail
proves nothing. What a service serves (its port, its health routes, its
subcommands) is read from the code, never restated here.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pathspec import GitIgnoreSpec

from spinewatch.alerting.settings import AlertingSettings
from spinewatch.cli.main import _parser
from spinewatch.engine.settings import Settings
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.runtime.settings_env import StrictEnvSettings

ROOT = Path(__file__).resolve().parents[1]
PROJECT_IMAGE = re.compile(r"^spinewatch:[0-9][\w.-]*$")
PINNED = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|REDIS_URL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]*:[^@\s$]+@")
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-[^}]*)?\}")  # $$ escapes
SERVICE_SETTINGS: dict[str, type[StrictEnvSettings]] = {
    "worker": Settings,
    "alerting": AlertingSettings,
    "gateway": GatewaySettings,
}
PREFIXES = {
    "worker": "SPINEWATCH_",
    "alerting": "SPINEWATCH_ALERTING_",
    "gateway": "SPINEWATCH_GATEWAY_",
}
# Fields with a default that is wrong in any container: the defaults point at
# 127.0.0.1 (Redis) or leave the service unable to verify or sign.
MUST_SET = {
    "worker": ("kafka_brokers", "signing_key"),
    "alerting": ("signing_key", "redis_url"),
    "gateway": ("redis_url",),
}


def cli_problem(argv: list[str]) -> str | None:
    """None when `spinewatch ARGV` parses with the real parser, else argparse's complaint."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            _parser().parse_args(argv)
        except SystemExit:
            return f"`spinewatch {' '.join(argv)}`: {err.getvalue().strip().splitlines()[-1]}"
    return None


# -- settings read from the code -------------------------------------------------------------
def service_port(role: str) -> int:
    field = {"worker": "metrics_port", "alerting": "http_port", "gateway": "port"}[role]
    return int(SERVICE_SETTINGS[role].model_fields[field].default)


def served_paths(role: str) -> set[str]:
    """The GET routes each service registers, read from its source."""
    sources = {
        "worker": ROOT / "services/spinewatch/adapters/http.py",
        "alerting": ROOT / "services/spinewatch/alerting/service.py",
        "gateway": ROOT / "services/spinewatch/gateway/app.py",
    }
    text = sources[role].read_text()
    return set(re.findall(r'add_get\("(/[a-z]+)"', text)) | set(
        re.findall(r'@app\.get\("(/[a-z]+)"', text)
    )


def required_variables(role: str) -> set[str]:
    settings = SERVICE_SETTINGS[role]
    names = {n for n, field in settings.model_fields.items() if field.is_required()}
    return {PREFIXES[role] + name.upper() for name in names | set(MUST_SET[role])}


# -- docker-compose.yml --------------------------------------------------------------------
def env_file_keys(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _one_shots(services: Mapping[str, Any]) -> set[str]:
    return {
        name
        for service in services.values()
        for name, dep in (service.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }


def compose_problems(compose: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    services: Mapping[str, Any] = compose["services"]
    one_shots = _one_shots(services)
    ignored = GitIgnoreSpec.from_lines((root / ".gitignore").read_text().splitlines())
    for name, service in services.items():
        problems += _liveness_problems(name, service, one_shot=name in one_shots)
        image = service.get("image", "")
        if not (PINNED.match(image) or ("build" in service and PROJECT_IMAGE.match(image))):
            problems.append(f"{name}: image {image!r} is not pinned by digest")
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if SECRET_NAME.search(key) and value not in (None, ""):
                problems.append(f"{name}: secret {key} set in the file (use its env_file)")
        for env_file in service.get("env_file") or []:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            if not ignored.match_file(path):
                problems.append(f"{name}: env_file {path} is not gitignored")
            example = root / f"{path}.example"
            if not example.is_file():
                problems.append(f"{name}: env_file {path} has no {path}.example")
            elif any(env_file_keys(example).values()):
                problems.append(f"{name}: {path}.example holds values")
        problems += _project_service_problems(name, service, root)
    return problems


def _liveness_problems(name: str, service: Mapping[str, Any], *, one_shot: bool) -> list[str]:
    """A restart policy on every service; a healthcheck on all but one-shots."""
    check = service.get("healthcheck") or {}
    if one_shot:
        if service.get("restart") not in ("no", "on-failure"):
            return [f"{name}: a one-shot needs restart 'no' or 'on-failure'"]
        return []
    problems = []
    if service.get("restart") not in ("always", "unless-stopped", "on-failure"):
        problems.append(f"{name}: no restart policy")
    if check.get("disable") or not check.get("test"):
        problems.append(f"{name}: no healthcheck")
    return problems


def _project_service_problems(name: str, service: Mapping[str, Any], root: Path) -> list[str]:
    if "build" not in service:
        return []
    problems = []
    command = list(service.get("command") or [])
    role = service.get("environment", {}).get("SPINEWATCH_ROLE")
    if not command or role != command[0]:
        problems.append(f"{name}: SPINEWATCH_ROLE {role!r} is not its command {command[:1]}")
    test = (service.get("healthcheck") or {}).get("test") or []
    if test and not service["healthcheck"].get("disable"):
        if test[:2] != ["CMD", "spinewatch"] or test[2:] != [*command[:1], "--check"]:
            problems.append(f"{name}: healthcheck {test} does not probe its own command")
        elif problem := cli_problem(test[2:]):
            problems.append(f"{name}: healthcheck {problem}")
    if role in SERVICE_SETTINGS:
        provided = set(service.get("environment") or {})
        for env_file in service.get("env_file") or []:
            provided |= set(env_file_keys(root / f"{env_file}.example"))
        for missing in sorted(required_variables(role) - provided):
            problems.append(f"{name}: {missing} is neither in environment nor in its env file")
    return problems


def interpolation_problems(text: str, root: Path = ROOT) -> list[str]:
    """Every ${VAR} without a default must be defined in a committed example."""
    defined: set[str] = set()
    for example in (root / "deploy/compose").glob("*.env.example"):
        defined |= set(env_file_keys(example))
    return [
        f"${{{var}}} has no default and no example defines it"
        for var, default in REFERENCE.findall(text)
        if not default and var not in defined
    ] + [f"a URL with a password: {m.group()}" for m in URL_WITH_PASSWORD.finditer(text)]


# -- Dockerfile ----------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in lines
        if line and not line.startswith("#")
        for parts in [line.split(None, 1)]
    ]


def _exec_form(value: str) -> list[str]:
    value = re.sub(r"^(--\S+\s+)*CMD\s+", "", value)  # HEALTHCHECK options
    return list(json.loads(value)) if value.startswith("[") else shlex.split(value)


def dockerfile_problems(text: str) -> list[str]:
    """ENTRYPOINT, CMD and HEALTHCHECK name subcommands and flags the CLI has."""
    instructions = dockerfile_instructions(text)
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    last = dict(instructions[final:])
    problems = []
    if _exec_form(last.get("ENTRYPOINT", "[]")) != ["spinewatch"]:
        problems.append("ENTRYPOINT is not the spinewatch console script")
    command = _exec_form(last.get("CMD", "[]"))
    if problem := cli_problem(command):
        problems.append(f"CMD {problem}")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(v for op, v in instructions if op == "ENV")))
    probe = " ".join(_exec_form(last.get("HEALTHCHECK", "[]")))
    for role in ("worker", "alerting", "gateway"):
        argv = shlex.split(probe.split("exec ", 1)[-1].replace('"$SPINEWATCH_ROLE"', role).rstrip())
        if argv[:1] != ["spinewatch"] or (problem := cli_problem(argv[1:])):
            problems.append(f"HEALTHCHECK for {role}: {probe!r} {problem or ''}")
    if env.get("SPINEWATCH_ROLE") != command[0]:
        problems.append(f"SPINEWATCH_ROLE {env.get('SPINEWATCH_ROLE')} is not the CMD's role")
    user = last.get("USER", "0").split(":")[0]
    if not user.isdigit() or int(user) == 0:
        problems.append(f"USER {user!r}: not a numeric non-root user")
    final_runs = [v for op, v in instructions[final:] if op == "RUN"]
    if any(re.search(r"apt-get|gcc|build-essential", run) for run in final_runs):
        problems.append("the final stage installs packages")
    return problems


# -- container environments -----------------------------------------------------------
def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile: what every container starts with."""
    env: dict[str, str] = {}
    for op, value in dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        for pair in value.split() if op == "ENV" else []:
            name, _, setting = pair.partition("=")
            env[name] = setting
    return env


def placeholder(name: str) -> str:
    """A stand-in for a secret, shaped as the setting requires."""
    if name.endswith("REDIS_URL"):
        return "redis://:placeholder@valkey:6379/0"
    return "p" * 40  # signing and pseudonym keys: >= 32 bytes


def container_env(container: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    env = {}
    for item in container["env"]:
        source = item.get("valueFrom", {})
        if "configMapKeyRef" in source:
            env[item["name"]] = config[source["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in source:
            env[item["name"]] = placeholder(item["name"])
        else:
            env[item["name"]] = item["value"]
    return env


# -- Kubernetes ----------------------------------------------------------------------------
def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))


def kubernetes_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        template = workload["spec"]["template"]
        for container in template["spec"]["containers"]:
            role = container["args"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if env.get("SPINEWATCH_ROLE") != role or (problem := cli_problem(container["args"])):
                problems.append(f"{name}: role {env.get('SPINEWATCH_ROLE')} / args {problem}")
                continue
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            served = served_paths(role)
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = container.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or path not in served:
                    problems.append(f"{name}: {probe} {get.get('path')} (serves {sorted(served)})")
                if ports.get(get.get("port")) != service_port(role):
                    problems.append(f"{name}: {probe} port is not {service_port(role)}")
            security = container.get("securityContext", {})
            if security.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}: capabilities not dropped")
            if "limits" not in container.get("resources", {}):
                problems.append(f"{name}: no resource limits")
        if not template["spec"].get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: runAsNonRoot not set")
    problems += _selector_problems(docs)
    return problems


def _selector_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    pods = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)
    }
    for doc in docs:
        if doc["kind"] not in ("PodDisruptionBudget", "Service"):
            continue
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [n for n, labels in pods.items() if selector.items() <= labels.items()]
        if doc["metadata"]["name"] not in matched:
            problems.append(f"{doc['kind']} {doc['metadata']['name']} selects {matched}")
    return problems
