"""The demo's investigation: one alert walked through the workflow by two people.

Over the alerting service's authenticated HTTP API, as staff would: the
on-call user acknowledges the drifting site's leakage alert, the quality
lead investigates it (reading the look-back list: the cases since the
chart last restarted) and closes it with a finding from the documented
list. Each step goes to the webhook and, with its full record, to the audit
topic, which the governance report reads for its alert history. The demo
prints who did what and the size and date span of the look-back list,
never a procedure id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

from spinewatch.contracts.control import FINDINGS

ON_CALL = "demo-oncall"
QUALITY_LEAD = "demo-quality-lead"
FINDING = "process_issue_action_taken"


@dataclass(frozen=True, slots=True)
class DemoUsers:
    """Bearer tokens of the demo's two users (issued for this run only)."""

    on_call: tuple[str, str]  # (user, token)
    quality_lead: tuple[str, str]


async def walk_investigation(url: str, fingerprint: str, users: DemoUsers, out: TextIO) -> None:
    """Acknowledge, investigate, read the look-back list and close; print each step."""
    print(
        f"\nInvestigation of {fingerprint} over the authenticated API (two demo users):", file=out
    )
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base_url=url, timeout=timeout) as session:
        steps = (
            (users.on_call, "ack", {"reason": "seen at handover (demo)"}),
            (users.quality_lead, "investigate", {"reason": "looking back from the flag (demo)"}),
        )
        for token, move, body in steps:
            answer = await _post(session, token, f"/alerts/{fingerprint}/{move}", body)
            print(f"  {move}: {answer}", file=out)
        print(f"  look-back: {await _lookback(session, users.quality_lead, fingerprint)}", file=out)
        closing = {
            "finding": FINDING,
            "reason": "demo: a scripted closing, not a clinical review",
            "chart_action": "none",
        }
        answer = await _post(session, users.quality_lead, f"/alerts/{fingerprint}/close", closing)
        print(f"  close: {answer} ({FINDINGS[FINDING]})", file=out)


async def _post(
    session: aiohttp.ClientSession, user: tuple[str, str], path: str, body: dict[str, Any]
) -> str:
    name, token = user
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(path, json=body, headers=headers) as response:
        answer = await response.json()
    if response.status != 200:
        return f"refused, HTTP {response.status} ({answer.get('outcome') or answer.get('error')})"
    return f"{answer['status']} (by {name})"


async def _lookback(session: aiohttp.ClientSession, user: tuple[str, str], fingerprint: str) -> str:
    """The list's size and date span: the demo prints no procedure id."""
    headers = {"Authorization": f"Bearer {user[1]}"}
    async with session.get(f"/alerts/{fingerprint}/cases", headers=headers) as response:
        if response.status != 200:
            return f"none yet (HTTP {response.status})"
        answer = await response.json()
    cases = answer.get("cases") or []
    if not cases:
        return "an empty list"
    driving = [c for c in cases if c.get("since_change_point")]
    dates = sorted(c["performed_on"] for c in cases)
    return (
        f"{len(cases)} cases since the chart's last restart ({dates[0]} to {dates[-1]}), "
        f"{len(driving)} of them from the estimated change point on"
    )
