"""Health built from progress: checks, and the /healthz and /readyz answers.

A check is one thing that must be true for a service to be doing its job:
a loop beating, input not waiting behind a stuck consumer, the broker or
Redis answering. Each says why when it fails. Liveness checks (a loop that
cannot recover, a stuck agent, lost data) turn `/healthz` red, and the
supervisor exits the process when one stays red past its give-up time;
every check turns `/readyz` red, so a load balancer or an operator sees a
service that is up but not watching.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    reason: str = ""
    # False: the service is up but cannot do its job right now (Redis down);
    # restarting it would not help, so only readiness turns red.
    liveness: bool = True

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"name": self.name, "ok": self.ok}
        if not self.ok:
            answer["reason"] = self.reason
            answer["liveness"] = self.liveness
        return answer


def report(
    checks: Iterable[Check], *, readiness: bool, extra: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of /readyz (readiness) or /healthz (liveness)."""
    listed = list(checks)
    counted = [c for c in listed if readiness or c.liveness]
    failing = [c for c in counted if not c.ok]
    body: dict[str, Any] = {
        "status": "failing" if failing else "ok",
        "failing": [f"{c.name}: {c.reason}" for c in failing],
        "checks": [c.as_json() for c in listed],
    }
    body.update(extra or {})
    return (503 if failing else 200), body


class HealthGauges:
    """`spinewatch_health_check_ok{service, check}`: 1 passing, 0 failing."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self.ok = Gauge(
            "spinewatch_health_check_ok",
            "1 while a health check passes, 0 while it fails (see /readyz for the reason).",
            ["service", "check"],
            registry=registry,
        )
        self._shown: set[str] = set()

    def update(self, checks: Iterable[Check]) -> None:
        seen: set[str] = set()
        for check in checks:
            seen.add(check.name)
            self.ok.labels(self.service, check.name).set(1 if check.ok else 0)
        # A check that is gone (a source that raised once, a partition
        # handed over) must not stay at 0 and page for ever.
        for gone in self._shown - seen:
            self.ok.remove(self.service, gone)
        self._shown = seen


def check_url(url: str, what: str, timeout_s: float = 5.0) -> int:
    """`--check`: 0 when a running process answers its /healthz with 200, else 1."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our own URL
            print(json.dumps(json.loads(response.read())))
            return 0
    except urllib.error.HTTPError as exc:  # 503: up, with the failing checks named
        print(f"{what} not healthy at {url}: {exc.read().decode()}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"{what} not healthy at {url}: {exc}", file=sys.stderr)
        return 1
